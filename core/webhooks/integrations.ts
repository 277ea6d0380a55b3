import type { Queryable } from '../db/port.ts';
import { callRpc, type SupabaseClient } from '../db/supabase.ts';
import type { EventContext } from '../events/canonical.ts';
import { isStorableText } from '../events/json-bounds.ts';
import { PreciseError } from '../errors.ts';
import type { IngestBatch } from '../ingest/batch.ts';
import { parseIngestResult, type IngestResult, type RawIngestResult } from '../ingest/writer.ts';
import { TtlCache, type TtlCacheEntries } from '../ttl-cache.ts';
import { mapPayload, parseMapping, webhookEventId, type MappedItem } from './delivery.ts';

/**
 * What the webhook endpoint needs from the database: the integration (org, status, mapping),
 * DSP campaign ids resolved to ours, and the write of a delivery (claim + events, one
 * transaction). SQL here; the Supabase path calls the same functions by rpc.
 */
export interface IntegrationRecord {
  id: string;
  org_id: string;
  status: string;
  properties: { mapping?: unknown; secret_version?: number } & Record<string, unknown>;
}

export interface WebhookStore {
  integration(id: string): Promise<IntegrationRecord | null>;
  campaignByExternalId(orgId: string, externalId: string): Promise<string | null>;
  ingest(integrationId: string, deliveryId: string, batch: IngestBatch): Promise<{ replayed: true } | ({ replayed: false } & IngestResult)>;
}

export function sqlWebhookStore(db: Queryable): WebhookStore {
  return {
    async integration(id) {
      const { rows } = await db.query<IntegrationRecord>('select * from public.webhook_integration($1)', [id]);
      return rows[0] ?? null;
    },
    async campaignByExternalId(orgId, externalId) {
      const { rows } = await db.query<{ id: string | null }>('select public.campaign_by_external_id($1, $2) as id', [orgId, externalId]);
      return rows[0]?.id ?? null;
    },
    async ingest(integrationId, deliveryId, batch) {
      const { rows } = await db.query<{ result: { replayed: boolean } & RawIngestResult }>(
        'select public.ingest_webhook($1, $2, $3::text::jsonb) as result',
        [integrationId, deliveryId, JSON.stringify(batch)],
      );
      const result = rows[0]!.result;
      return result.replayed ? { replayed: true } : { replayed: false, ...parseIngestResult(result) };
    },
  };
}

export function supabaseWebhookStore(client: SupabaseClient): WebhookStore {
  return {
    async integration(id) {
      const rows = await callRpc<IntegrationRecord[]>(client, 'webhook_integration', { p_integration_id: id });
      return rows[0] ?? null;
    },
    async campaignByExternalId(orgId, externalId) {
      const id = await callRpc<string | null>(client, 'campaign_by_external_id', { p_org_id: orgId, p_external_id: externalId });
      return id ?? null;
    },
    async ingest(integrationId, deliveryId, batch) {
      const result = await callRpc<{ replayed: boolean } & RawIngestResult>(client, 'ingest_webhook', {
        p_integration_id: integrationId,
        p_signature_hash: deliveryId,
        p_batch: batch,
      });
      return result.replayed ? { replayed: true } : { replayed: false, ...parseIngestResult(result) };
    },
  };
}

/** Cache entries a Worker isolate keeps across requests (see TtlCacheEntries). */
export interface WebhookCacheEntries {
  integrations?: TtlCacheEntries<IntegrationRecord>;
  campaigns?: TtlCacheEntries<string>;
}

/** The store with short-lived caches of integrations and campaign lookups. */
export class Webhooks {
  private readonly integrations: TtlCache<IntegrationRecord>;
  private readonly campaigns: TtlCache<string>;
  readonly store: WebhookStore;

  constructor(store: WebhookStore, shared: WebhookCacheEntries = {}) {
    this.store = store;
    this.integrations = new TtlCache((id) => store.integration(id), { entries: shared.integrations, ttlMs: 30_000 });
    this.campaigns = new TtlCache(
      (key) => {
        const [orgId, externalId] = [key.slice(0, 36), key.slice(37)];
        return store.campaignByExternalId(orgId, externalId);
      },
      { entries: shared.campaigns },
    );
  }

  integration(id: string): Promise<IntegrationRecord | null> {
    return this.integrations.get(id);
  }

  campaignByExternalId(orgId: string, externalId: string): Promise<string | null> {
    return this.campaigns.get(`${orgId} ${externalId}`);
  }
}

/**
 * A delivery's items: through the integration's mapping, or read as `{ "events": [...] }`
 * canonical events when it has none (each kept for failed_events without its `context`). A
 * replay maps one stored item again (`item`), with the body values it was first mapped with.
 */
export function webhookItems(
  integration: IntegrationRecord,
  body: unknown,
  replay?: { root: Record<string, unknown> },
): MappedItem[] {
  const { mapping } = integration.properties;
  if (mapping) {
    const parsed = parseMapping(mapping);
    return mapPayload(body, replay ? { ...parsed, events_path: '' } : parsed, replay);
  }
  const events = replay ? [body] : (body as { events?: unknown } | null)?.events;
  if (!Array.isArray(events)) {
    throw new PreciseError('bad_request', 'without a mapping the body must be { "events": [ ...canonical events ] }', { field: 'events' });
  }
  return events.map((event) => {
    if (typeof event !== 'object' || event === null || Array.isArray(event)) return { input: event, raw: event, root: {} };
    const { context: _context, ...raw } = event as Record<string, unknown>;
    return { input: { ...event } as Record<string, unknown>, raw, root: {} };
  });
}

export interface PreparedItems {
  inputs: unknown[];
  /** what each input adds to its context (an external campaign id no campaign claims) */
  contexts: Array<Partial<EventContext> | undefined>;
}

/** Ids derived for items without one, DSP campaign ids resolved to ours (or flagged unmatched). */
export async function prepareWebhookItems(
  integration: Pick<IntegrationRecord, 'id' | 'org_id'>,
  items: MappedItem[],
  campaignByExternalId: (orgId: string, externalId: string) => Promise<string | null>,
): Promise<PreparedItems> {
  const prepared: PreparedItems = { inputs: [], contexts: [] };
  for (const item of items) {
    if (typeof item.input !== 'object' || item.input === null || Array.isArray(item.input)) {
      prepared.inputs.push(item.input);
      prepared.contexts.push(undefined);
      continue;
    }
    const input: Record<string, unknown> = { ...item.input };
    // from what the mapping made of the item, before our own lookups change it
    input.event_id ??= webhookEventId(integration.id, item.input as Record<string, unknown>, item.externalCampaignId);
    let context: Partial<EventContext> | undefined;
    if (item.externalCampaignId) {
      // text Postgres cannot take is never looked up: validation refuses the item by its field
      const lookable = isStorableText(item.externalCampaignId) && item.externalCampaignId.length <= 256;
      const campaignId = lookable ? await campaignByExternalId(integration.org_id, item.externalCampaignId) : null;
      if (campaignId) input.campaign_id = campaignId;
      else context = { unmatched_campaign: item.externalCampaignId };
      input.properties = { ...(input.properties as object | undefined), external_campaign_id: item.externalCampaignId };
    }
    prepared.inputs.push(input);
    prepared.contexts.push(context);
  }
  return prepared;
}
