import { Hono } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { PreciseError } from '../../core/errors.ts';
import { failureRecord } from '../../core/ingest/batch.ts';
import { normaliseEvent, type CanonicalEvent } from '../../core/events/canonical.ts';
import { LIMITS } from '../../core/events/limits.ts';
import type { IntegrationRecord } from '../../core/integrations.ts';
import { deliveryId, mapPayload, parseMapping, verifyWebhookSignature, webhookEventId, webhookSecret, type MappedItem } from '../../core/webhook.ts';
import type { AppEnv, Services } from '../env.ts';
import { countOutcomes, requestContext, type RejectedEvent } from '../ingest.ts';
import type { FailureRecord } from '../../core/ingest/batch.ts';

/**
 * POST /v1/webhooks/:integration: a DSP's signed notification (win notices, impression and
 * click reports, spend reports). Verified with the integration's whsec_ secret, refused when
 * replayed, mapped to canonical events by the integration's declarative mapping (or read as
 * `{ "events": [...] }` canonical events when it has none). 200 with accepted, duplicate and
 * rejected counts; rejected items go to failed_events.
 */
export const webhookRoutes = new Hono<AppEnv>();

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
// One answer for every verification failure: nothing about which part was wrong.
const invalidSignature = () => new PreciseError('unauthorized', 'signature verification failed', { field: 'x-precise-signature' });

webhookRoutes.post(
  '/:integration',
  bodyLimit({
    maxSize: LIMITS.batchBytes,
    onError: () => {
      throw new PreciseError('payload_too_large', `a webhook body is at most ${LIMITS.batchBytes} bytes`, { field: 'body' });
    },
  }),
  async (c) => {
    const services = c.get('services');
    const id = c.req.param('integration');
    const body = await c.req.text();
    const header = c.req.header('x-precise-signature');
    const integration = UUID.test(id) ? await services.webhooks.integration(id.toLowerCase()) : null;
    const secret = integration && webhookSecret(services.serverSecret, integration.id, integration.properties.secret_version ?? 1);
    if (!integration || !secret || !verifyWebhookSignature(secret, header, body, Math.floor(Date.now() / 1000))) {
      throw invalidSignature();
    }
    if (integration.status !== 'active') {
      throw new PreciseError('forbidden', `integration ${integration.id} is ${integration.status}`, { field: 'integration' });
    }

    let payload: unknown;
    try {
      payload = JSON.parse(body);
    } catch {
      throw new PreciseError('bad_request', 'the body is not valid JSON', { field: 'body' });
    }
    const items = mappedItems(payload, integration);
    if (items.length > LIMITS.batchEvents) {
      throw new PreciseError('payload_too_large', `at most ${LIMITS.batchEvents} events per delivery (got ${items.length})`, { field: 'body' });
    }

    const { events, failures, rejected } = await normaliseItems(items, integration, services, requestContext(c, 'webhook'));
    const result = await services.webhooks.store.ingest(integration.id, deliveryId(header!), { events, failures });
    if (result.replayed) {
      throw new PreciseError('conflict', 'this delivery was already received (replayed signature)', { field: 'x-precise-signature', reason: 'replayed_delivery' });
    }
    const outcomes = events.map((event) => {
      const key = `${event.org_id} ${event.event_id}`;
      return result.failed.has(key) ? ('failed' as const) : result.duplicates.has(key) ? ('duplicate' as const) : ('stored' as const);
    });
    return c.json({ ...countOutcomes(outcomes), rejected });
  },
);

function mappedItems(payload: unknown, integration: IntegrationRecord): MappedItem[] {
  if (integration.properties.mapping) return mapPayload(payload, parseMapping(integration.properties.mapping));
  const events = (payload as { events?: unknown } | null)?.events;
  if (!Array.isArray(events)) {
    throw new PreciseError('bad_request', 'without a mapping the body must be { "events": [ ...canonical events ] }', { field: 'events' });
  }
  return events.map((event) => ({ input: event as Record<string, unknown>, raw: event }));
}

async function normaliseItems(items: MappedItem[], integration: IntegrationRecord, services: Services, context: CanonicalEvent['context']) {
  const events: CanonicalEvent[] = [];
  const failures: FailureRecord[] = [];
  const rejected: RejectedEvent[] = [];
  const receivedAt = new Date();
  for (const [index, item] of items.entries()) {
    const input: Record<string, unknown> =
      typeof item.input === 'object' && item.input !== null ? { ...item.input } : { invalid: item.input };
    let itemContext = context;
    if (item.externalCampaignId) {
      const campaignId = await services.webhooks.campaignByExternalId(integration.org_id, item.externalCampaignId);
      if (campaignId) input.campaign_id = campaignId;
      else itemContext = { ...context, unmatched_campaign: item.externalCampaignId };
      input.properties = { ...(input.properties as object | undefined), external_campaign_id: item.externalCampaignId };
    }
    input.event_id ??= webhookEventId(integration.id, item.raw);
    const normalised = normaliseEvent(input, { orgId: integration.org_id, receivedAt, context: itemContext });
    if (normalised.ok) {
      events.push(normalised.event);
      continue;
    }
    rejected.push({ index, ...normalised.rejection });
    failures.push(
      failureRecord({
        orgId: integration.org_id,
        source: 'webhook',
        rejection: normalised.rejection,
        payload: JSON.stringify(item.raw),
        payloadFormat: 'json',
        receivedAt,
        context: itemContext,
      }),
    );
  }
  return { events, failures, rejected };
}
