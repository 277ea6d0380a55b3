import type { Context } from 'hono';
import type { ResolvedKey, KeyCache } from '../core/auth.ts';
import type { CampaignCache } from '../core/campaigns.ts';
import type { PostbackRecorder } from '../core/postback.ts';
import type { Webhooks } from '../core/integrations.ts';
import type { MetricsReader } from '../core/metrics-query.ts';
import type { EventSink } from '../core/ingest/batch.ts';
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
}

/** What the routes need, built once per process (Node) or per isolate (Workers). */
export interface Services {
  /** Resolves when the database answers. */
  ping(): Promise<void>;
  keys: KeyCache;
  campaigns: CampaignCache;
  sink: EventSink;
  /** Records postbacks with their dedup and status rules, in the request (low volume, needs the log). */
  postbacks: PostbackRecorder;
  /** DSP integrations: lookups and the write of a signed delivery. */
  webhooks: Webhooks;
  /** Metric sums for GET /v1/metrics (public.metric_buckets over SQL or supabase-js rpc). */
  metrics: MetricsReader;
  /** Server secret (derives click-signing secrets); never logged. */
  serverSecret: string;
  /** Secret for the daily IP hash; never logged. */
  ipHashSecret: string;
  /** The caller's IP as the runtime sees it (never stored raw). */
  clientIp(c: Context<AppEnv>): string | undefined;
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
