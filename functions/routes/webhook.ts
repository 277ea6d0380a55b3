import { Hono } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { PreciseError } from '../../core/errors.ts';
import { isUuid } from '../../core/events/canonical.ts';
import { boundedJson, jsonDepth, cutDeeperThan } from '../../core/events/json-bounds.ts';
import { LIMITS } from '../../core/events/limits.ts';
import { failureRecord } from '../../core/ingest/batch.ts';
import { dedupeBatch, outcomesOf } from '../../core/ingest/writer.ts';
import { prepareWebhookItems, webhookItems, type IntegrationRecord } from '../../core/webhooks/integrations.ts';
import { parseMapping, verifyWebhookSignature, webhookSecret } from '../../core/webhooks/delivery.ts';
import type { AppEnv } from '../env.ts';
import { countOutcomes, normaliseInputs, serverRequestContext, withStoreRefusals } from '../ingest.ts';

/**
 * POST /v1/webhooks/:integration: a DSP's signed notification (win notices, impression and
 * click reports, spend reports). Verified with the integration's whsec_ secret over the body's
 * bytes, refused when replayed, mapped to canonical events by the integration's declarative
 * mapping (or read as `{ "events": [...] }` canonical events when it has none). 200 with
 * accepted, duplicate and rejected counts; rejected items go to failed_events.
 */
export const webhookRoutes = new Hono<AppEnv>();

/** Nesting a DSP body may have: mapping paths and the item walks stay far from the stack's end. */
const WEBHOOK_BODY_DEPTH = 64;
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
    const bytes = new Uint8Array(await c.req.arrayBuffer());
    const integration = isUuid(id) ? await services.webhooks.integration(id.toLowerCase()) : null;
    // an unknown integration is verified all the same (against a secret no one has): it costs what a bad signature costs
    const secret = webhookSecret(services.serverSecret, integration?.id ?? 'unknown-integration', integration?.properties.secret_version ?? 1);
    const deliveryKey = verifyWebhookSignature(secret, c.req.header('x-precise-signature'), bytes, Math.floor(Date.now() / 1000));
    if (!integration || !deliveryKey) throw invalidSignature();
    if (integration.status !== 'active') {
      throw new PreciseError('forbidden', `integration ${integration.id} is ${integration.status}`, { field: 'integration' });
    }

    const payload = parseBody(bytes);
    const server = serverRequestContext(c, 'webhook');
    const receivedAt = new Date();
    const items = webhookItems(integration, payload);
    if (items.length === 0) {
      const path = integration.properties.mapping ? parseMapping(integration.properties.mapping).events_path : 'events';
      const error = new PreciseError('validation_failed', `no events at events_path "${path}"`, {
        field: 'events_path',
        reason: 'no_events',
        events_path: path,
      });
      // kept (and the delivery claimed, so a resend is a 409): replayable once the mapping is fixed
      const failure = failureRecord({
        orgId: integration.org_id,
        source: 'webhook',
        rejection: { code: 'no_events', message: error.message, field: 'events_path' },
        payload: boundedJson(payload),
        payloadFormat: 'json',
        receivedAt,
        context: server.base,
        replay: { integration_id: integration.id, webhook_body: true },
      });
      const result = await services.webhooks.store.ingest(integration.id, deliveryKey, { events: [], failures: [failure] });
      if (result.replayed) throw replayedDelivery();
      throw error;
    }
    if (items.length > LIMITS.batchEvents) {
      throw new PreciseError('payload_too_large', `at most ${LIMITS.batchEvents} events per delivery (got ${items.length})`, { field: 'body' });
    }

    const prepared = await prepareWebhookItems(integration, items, (orgId, externalId) => services.webhooks.campaignByExternalId(orgId, externalId));
    const normalised = normaliseInputs(prepared.inputs, {
      orgId: integration.org_id,
      source: 'webhook',
      context: server.base,
      userContext: server.userContext,
      receivedAt,
      payloadFormat: 'json',
      rawOf: (index) => boundedJson(items[index]!.raw),
      contextOf: (index) => prepared.contexts[index],
      replayOf: (index) => replayFacts(integration, items[index]!.root),
    });
    // the delivery's claim and its events in one write; the rest as for every other JSON source
    const batch = { events: normalised.events, failures: normalised.failures };
    const { unique, repeat } = dedupeBatch(batch);
    const result = await services.webhooks.store.ingest(integration.id, deliveryKey, unique);
    if (result.replayed) throw replayedDelivery();
    const outcomes = outcomesOf(batch, repeat, result);
    return c.json({ ...countOutcomes(outcomes), rejected: withStoreRefusals(normalised, outcomes) });
  },
);

const replayedDelivery = () =>
  new PreciseError('conflict', 'this delivery was already received (replayed signature)', { field: 'x-precise-signature', reason: 'replayed_delivery' });

/** What a refused item's replay needs: its integration (whose mapping applies again), the body values it was mapped with. */
function replayFacts(integration: IntegrationRecord, root: Record<string, unknown>): Record<string, unknown> {
  return { integration_id: integration.id, ...(Object.keys(root).length > 0 ? { webhook_root: JSON.parse(boundedJson(root)) } : {}) };
}

/** The verified bytes as JSON: UTF-8, parsed, and bounded before any mapping recurses over it. */
function parseBody(bytes: Uint8Array): unknown {
  let payload: unknown;
  try {
    payload = JSON.parse(new TextDecoder('utf-8', { fatal: true, ignoreBOM: false }).decode(bytes));
  } catch {
    throw new PreciseError('bad_request', 'the body is not valid UTF-8 JSON', { field: 'body' });
  }
  // Nesting past the bound is cut to a stub before any mapping recurses over it: an item holding
  // a cut is refused as too deep by its own path, and its siblings land.
  return jsonDepth(payload) > WEBHOOK_BODY_DEPTH ? cutDeeperThan(payload, WEBHOOK_BODY_DEPTH) : payload;
}
