import { createClient, type SupabaseClient } from '@supabase/supabase-js';
import type { KeyStore, ResolvedKey } from '../auth.ts';
import type { CampaignStore } from '../campaigns.ts';
import type { PostbackRecorder, PostbackResult } from '../postback.ts';
import type { IntegrationRecord, WebhookStore } from '../integrations.ts';
import { PreciseError } from '../errors.ts';
import type { MetricBuckets, MetricsReader } from '../metrics-query.ts';
import type { IngestBatch } from './batch.ts';
import { parseIngestResult, type EventWriter } from './writer.ts';

/**
 * The Supabase write path from the edge: supabase-js `rpc` with the service-role key, calling
 * the same SQL functions as the Postgres path (public.ingest_events, public.resolve_api_key).
 */
export function supabaseServiceClient(url: string, serviceRoleKey: string): SupabaseClient {
  return createClient(url, serviceRoleKey, {
    auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
  });
}

export function supabaseEventWriter(client: SupabaseClient): EventWriter {
  return {
    async write(batch: IngestBatch) {
      const { data, error } = await client.rpc('ingest_events', { p_batch: batch });
      // PostgREST passes the SQLSTATE on: a refusal of the rows themselves can be isolated
      if (error) throw Object.assign(unavailable('ingest_events', error.message), { sqlstate: error.code });
      return parseIngestResult(data);
    },
  };
}

export function supabaseKeyStore(client: SupabaseClient): KeyStore {
  return {
    async findByHash(hash) {
      const { data, error } = await client.rpc('resolve_api_key', { p_key_hash: hash });
      if (error) throw unavailable('resolve_api_key', error.message);
      return ((data as Array<ResolvedKey & { key_hash: string }>)[0] ?? null);
    },
  };
}

export function supabaseCampaignStore(client: SupabaseClient): CampaignStore {
  return {
    async properties(orgId, campaignId) {
      const { data, error } = await client.rpc('campaign_properties', { p_org_id: orgId, p_campaign_id: campaignId });
      if (error) throw unavailable('campaign_properties', error.message);
      return (data as Record<string, unknown> | null) ?? null;
    },
  };
}

export function supabaseMetricsReader(client: SupabaseClient): MetricsReader {
  return {
    async buckets(query, metrics) {
      const { data, error } = await client.rpc('metric_buckets', {
        p_org_id: query.orgId,
        p_entity_type: query.entityType,
        p_entity_id: query.entityId,
        p_metrics: metrics,
        p_from: query.from,
        p_to: query.to,
        p_granularity: query.granularity,
        p_time_zone: query.timeZone,
        p_currency: query.currency ?? null,
      });
      if (error) throw unavailable('metric_buckets', error.message);
      return data as MetricBuckets;
    },
  };
}

export function supabasePostbackRecorder(client: SupabaseClient): PostbackRecorder {
  return {
    async record(event) {
      const { data, error } = await client.rpc('record_postback', { p_event: event });
      if (error) throw unavailable('record_postback', error.message);
      return data as PostbackResult;
    },
  };
}

export function supabaseWebhookStore(client: SupabaseClient): WebhookStore {
  return {
    async integration(id) {
      const { data, error } = await client.rpc('webhook_integration', { p_integration_id: id });
      if (error) throw unavailable('webhook_integration', error.message);
      return ((data as IntegrationRecord[])[0] ?? null);
    },
    async campaignByExternalId(orgId, externalId) {
      const { data, error } = await client.rpc('campaign_by_external_id', { p_org_id: orgId, p_external_id: externalId });
      if (error) throw unavailable('campaign_by_external_id', error.message);
      return (data as string | null) ?? null;
    },
    async ingest(integrationId, deliveryId, batch) {
      const { data, error } = await client.rpc('ingest_webhook', {
        p_integration_id: integrationId,
        p_signature_hash: deliveryId,
        p_batch: batch,
      });
      if (error) throw unavailable('ingest_webhook', error.message);
      return data.replayed ? { replayed: true } : { replayed: false, ...parseIngestResult(data) };
    },
  };
}

/** Health through the same path: a lookup of a hash no key has. */
export async function pingSupabase(client: SupabaseClient): Promise<void> {
  const { error } = await client.rpc('resolve_api_key', { p_key_hash: '0'.repeat(64) });
  if (error) throw new Error(error.message);
}

/** The cause goes to the operator's log; the caller learns only that it may retry. */
function unavailable(fn: string, cause: string): PreciseError {
  console.error(`supabase rpc ${fn} failed: ${cause}`);
  return new PreciseError('unavailable', 'the event store is unavailable; retry shortly', { retry_after_seconds: 1 });
}
