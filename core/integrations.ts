import type { Queryable } from './db/port.ts';
import type { IngestBatch } from './ingest/batch.ts';
import { parseIngestResult, type IngestResult } from './ingest/writer.ts';
import { TtlCache, type TtlCacheEntries } from './ttl-cache.ts';

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
      const { rows } = await db.query<{ result: { replayed: boolean } & Parameters<typeof parseIngestResult>[0] }>(
        'select public.ingest_webhook($1, $2, $3::text::jsonb) as result',
        [integrationId, deliveryId, JSON.stringify(batch)],
      );
      const result = rows[0]!.result;
      return result.replayed ? { replayed: true } : { replayed: false, ...parseIngestResult(result) };
    },
  };
}

/** The store with short-lived caches of integrations and campaign lookups. */
export class Webhooks {
  private readonly integrations: TtlCache<IntegrationRecord>;
  private readonly campaigns: TtlCache<string>;
  readonly store: WebhookStore;

  constructor(
    store: WebhookStore,
    shared: { integrations?: TtlCacheEntries<IntegrationRecord>; campaigns?: TtlCacheEntries<string> } = {},
  ) {
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
