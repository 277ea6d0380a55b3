import type { Context } from 'hono';
import type { ResolvedKey, KeyResolver } from '../core/auth.ts';
import type { CampaignCache } from '../core/campaigns.ts';
import type { PostbackRecorder } from '../core/postback.ts';
import type { Webhooks } from '../core/webhooks/integrations.ts';
import type { AttributionMath, AttributionReader } from '../core/attribution-query.ts';
import type { AlertLogReader } from '../core/alerts/log.ts';
import type { FatigueMath, FatigueReader } from '../core/fatigue-query.ts';
import type { MetricsReader } from '../core/metrics-query.ts';
import type { EventSink } from '../core/ingest/batch.ts';
import type { RateLimitBinding, RateLimits } from '../core/rate-limit.ts';
import type { QueueMessage } from './sinks/queue.ts';

/** Bindings of the Worker (wrangler.toml, secrets in .dev.vars); Node passes none. */
export interface Bindings {
  HYPERDRIVE?: { connectionString: string };
  DATABASE_URL?: string;
  EVENTS_QUEUE?: Queue<QueueMessage>;
  /** 'queue' (default on Workers): Cloudflare Queue; 'direct': write in the request */
  INGEST_SINK?: string;
  /** 'hyperdrive' (default) or 'supabase' (supabase-js rpc with the service-role key) */
  DB_DRIVER?: string;
  SUPABASE_URL?: string;
  SUPABASE_SERVICE_ROLE_KEY?: string;
  IP_HASH_SECRET?: string;
  /** Server secret: click-signing and webhook secrets are derived from it. */
  PRECISE_SECRET?: string;
  /**
   * Each limit: a `[[ratelimits]]` binding of this name (wrangler.toml), else a var "N/Ss" or
   * "off" for the isolate's own limiter, else the default (core/config.ts).
   */
  RATE_LIMIT_ADDRESS?: RateLimitBinding | string;
  RATE_LIMIT_KEY?: RateLimitBinding | string;
  RATE_LIMIT_KEY_LOOKUPS_PER_ADDRESS?: RateLimitBinding | string;
  RATE_LIMIT_KEY_LOOKUPS?: RateLimitBinding | string;
  /** origins allowed to call the secret-key API from a browser, comma-separated */
  CORS_ORIGINS?: string;
}

/** What the routes need, built once per process (Node) or per isolate (Workers). */
export interface Services {
  /** Resolves when the database answers. */
  ping(): Promise<void>;
  keys: KeyResolver;
  campaigns: CampaignCache;
  sink: EventSink;
  /** Records postbacks with their dedup and status rules, in the request (low volume, needs the log). */
  postbacks: PostbackRecorder;
  /** DSP integrations: lookups and the write of a signed delivery. */
  webhooks: Webhooks;
  /** Metric sums for GET /v1/metrics (public.metric_buckets over SQL or supabase-js rpc). */
  metrics: MetricsReader;
  /** The attribution ledger for GET /v1/attribution (SQL functions over SQL or supabase-js rpc). */
  attribution: AttributionReader;
  /** The models' math (scheduled/attribution/models.ts), passed in by the composition root. */
  attributionMath: AttributionMath;
  /** The creative-fatigue verdicts for GET /v1/fatigue (SQL functions over SQL or supabase-js rpc). */
  fatigue: FatigueReader;
  /** The exposure curve's fit (scheduled/fatigue/detector.ts), passed in by the composition root. */
  fatigueMath: FatigueMath;
  /** The alert webhook's delivery log for GET /v1/alerts/deliveries (SQL or supabase-js rpc). */
  alerts: AlertLogReader;
  /** Server secret (derives click-signing secrets); never logged. */
  serverSecret: string;
  /** Secret for the daily IP hash; never logged. */
  ipHashSecret: string;
  /** The caller's IP as the runtime sees it (never stored raw). */
  clientIp(c: Context<AppEnv>): string | undefined;
  /** Rate limits (functions/middleware/rate-limit.ts); absent: the defaults, in process. */
  limits?: RateLimits;
  /** Browser origins allowed to call the secret-key API (CORS); absent: none. */
  corsOrigins?: readonly string[];
  /** Releases per-request resources (a Worker's database connection) after the response. */
  release?(): Promise<void>;
}

export interface Variables {
  requestId: string;
  services: Services;
  key: ResolvedKey;
}

export interface AppEnv {
  Bindings: Bindings;
  Variables: Variables;
}
