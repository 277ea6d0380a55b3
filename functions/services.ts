import { KeyCache, sqlKeyStore, supabaseKeyStore, type KeyCacheEntries, type KeyStore } from '../core/auth.ts';
import { CampaignCache, sqlCampaignStore, supabaseCampaignStore, type CampaignStore } from '../core/campaigns.ts';
import type { Queryable } from '../core/db/port.ts';
import { pingSupabase, type SupabaseClient } from '../core/db/supabase.ts';
import type { EventSink } from '../core/ingest/batch.ts';
import { sqlEventWriter, supabaseEventWriter, type EventWriter } from '../core/ingest/writer.ts';
import { sqlAttributionReader, supabaseAttributionReader, type AttributionMath, type AttributionReader } from '../core/attribution-query.ts';
import { sqlAlertLogReader, supabaseAlertLogReader, type AlertLogReader } from '../core/alerts/log.ts';
import { sqlFatigueReader, supabaseFatigueReader, type FatigueMath, type FatigueReader } from '../core/fatigue-query.ts';
import { sqlMetricsReader, supabaseMetricsReader, type MetricsReader } from '../core/metrics-query.ts';
import { sqlPostbackRecorder, supabasePostbackRecorder, type PostbackRecorder } from '../core/postback.ts';
import type { RateLimits } from '../core/rate-limit.ts';
import type { TtlCacheEntries } from '../core/ttl-cache.ts';
import { sqlWebhookStore, supabaseWebhookStore, Webhooks, type WebhookCacheEntries, type WebhookStore } from '../core/webhooks/integrations.ts';
import type { Services } from './env.ts';

/**
 * The services of a request, assembled in one place for the Node server, the Worker and the
 * tests. What differs between them is passed in: the database (SQL or supabase-js rpc), the
 * sink (group commit, queue, direct), the limits, how the client's IP is found, the secrets.
 */
export interface ServiceParts {
  stores: Stores;
  /** Where accepted events go; durable when `send` resolves. */
  sink: EventSink;
  /**
   * The attribution models (scheduled/attribution/models.ts): functions/ may not import
   * scheduled/, so the composition root (cli/, worker.ts, a test) passes them in.
   */
  attributionMath: AttributionMath;
  fatigueMath: FatigueMath;
  serverSecret: string;
  ipHashSecret: string;
  clientIp: Services['clientIp'];
  limits?: RateLimits;
  corsOrigins?: readonly string[];
  /** Cache entries that outlive these services (a Worker isolate's, across its requests). */
  caches?: SharedCaches;
  release?: () => Promise<void>;
}

/** Every store a request may need, on one backend. */
export interface Stores {
  keys: KeyStore;
  campaigns: CampaignStore;
  postbacks: PostbackRecorder;
  webhooks: WebhookStore;
  metrics: MetricsReader;
  attribution: AttributionReader;
  fatigue: FatigueReader;
  alerts: AlertLogReader;
  writer: EventWriter;
  /** Resolves when the database answers. */
  ping(): Promise<void>;
}

export interface SharedCaches {
  keys?: KeyCacheEntries;
  campaigns?: TtlCacheEntries<Record<string, unknown>>;
  webhooks?: WebhookCacheEntries;
}

export function createServices(parts: ServiceParts): Services {
  const { stores, caches } = parts;
  return {
    ping: stores.ping,
    keys: new KeyCache(stores.keys, { entries: caches?.keys }),
    campaigns: new CampaignCache(stores.campaigns, { entries: caches?.campaigns }),
    postbacks: stores.postbacks,
    webhooks: new Webhooks(stores.webhooks, caches?.webhooks),
    metrics: stores.metrics,
    attribution: stores.attribution,
    attributionMath: parts.attributionMath,
    fatigueMath: parts.fatigueMath,
    fatigue: stores.fatigue,
    alerts: stores.alerts,
    sink: parts.sink,
    serverSecret: parts.serverSecret,
    ipHashSecret: parts.ipHashSecret,
    clientIp: parts.clientIp,
    limits: parts.limits,
    corsOrigins: parts.corsOrigins,
    release: parts.release,
  };
}

/** The stores over SQL: pg or PGlite on Node, postgres.js through Hyperdrive on Workers. */
export function sqlStores(db: Queryable): Stores {
  return {
    keys: sqlKeyStore(db),
    campaigns: sqlCampaignStore(db),
    postbacks: sqlPostbackRecorder(db),
    webhooks: sqlWebhookStore(db),
    metrics: sqlMetricsReader(db),
    attribution: sqlAttributionReader(db),
    fatigue: sqlFatigueReader(db),
    alerts: sqlAlertLogReader(db),
    writer: sqlEventWriter(db),
    ping: async () => void (await db.query('select 1')),
  };
}

/** The same stores through supabase-js rpc (a Supabase deployment at the edge): the same SQL functions. */
export function supabaseStores(client: SupabaseClient): Stores {
  return {
    keys: supabaseKeyStore(client),
    campaigns: supabaseCampaignStore(client),
    postbacks: supabasePostbackRecorder(client),
    webhooks: supabaseWebhookStore(client),
    metrics: supabaseMetricsReader(client),
    attribution: supabaseAttributionReader(client),
    fatigue: supabaseFatigueReader(client),
    alerts: supabaseAlertLogReader(client),
    writer: supabaseEventWriter(client),
    ping: () => pingSupabase(client),
  };
}
