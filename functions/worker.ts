import { KeyCache, sqlKeyStore, type KeyCacheEntries } from '../core/auth.ts';
import { parseLimitsConfig } from '../core/config.ts';
import { openPostgresJs } from '../core/db/postgres-js.ts';
import { PreciseError } from '../core/errors.ts';
import { CampaignCache, sqlCampaignStore } from '../core/campaigns.ts';
import {
  pingSupabase,
  supabaseCampaignStore,
  supabaseEventWriter,
  supabaseKeyStore,
  supabaseMetricsReader,
  supabasePostbackRecorder,
  supabaseServiceClient,
  supabaseWebhookStore,
} from '../core/ingest/supabase.ts';
import { sqlWebhookStore, Webhooks, type IntegrationRecord } from '../core/integrations.ts';
import { sqlPostbackRecorder, type PostbackRecorder } from '../core/postback.ts';
import { bindingLimiter, inProcessLimits, type RateLimitBinding, type RateLimits } from '../core/rate-limit.ts';
import { TtlCacheEntries } from '../core/ttl-cache.ts';
import type { Queryable } from '../core/db/port.ts';
import { sqlMetricsReader, type MetricsReader } from '../core/metrics-query.ts';
import { partitionUpkeepJob } from '../scheduled/jobs/partition-upkeep.ts';
import { rollupJob } from '../scheduled/jobs/rollup.ts';
import { sqlEventWriter, type EventWriter } from '../core/ingest/writer.ts';
import { createApp } from './app.ts';
import type { Bindings, Services } from './env.ts';
import { consumeEventQueue } from './queue-consumer.ts';
import { directSink } from './sinks/direct.ts';
import { queueSink, type QueueMessage } from './sinks/queue.ts';

/**
 * The Cloudflare Worker entry: `fetch` serves the Hono app; `queue` consumes the event queue
 * (and its dead-letter queue). Workers may not share I/O between requests, so each request
 * (or queue delivery) opens its own database client, which Hyperdrive makes cheap; only the key
 * cache's entries live on in the isolate.
 * The database is Postgres through Hyperdrive (DB_DRIVER=hyperdrive, the default) or Supabase
 * through supabase-js rpc (DB_DRIVER=supabase); both call the same SQL functions.
 */
interface EdgeBackend {
  writer: EventWriter;
  /** SQL access for the scheduled jobs; absent on the Supabase rpc path. */
  readDb?: Queryable;
  metrics: MetricsReader;
  postbacks: PostbackRecorder;
  webhooks: Webhooks;
  keys: KeyCache;
  campaigns: CampaignCache;
  ping(): Promise<void>;
  release(): Promise<void>;
}

const keyEntries: KeyCacheEntries = new TtlCacheEntries();
const campaignEntries = new TtlCacheEntries<Record<string, unknown>>();
const webhookEntries = { integrations: new TtlCacheEntries<IntegrationRecord>(), campaigns: new TtlCacheEntries<string>() };

export function edgeBackend(env: Bindings): EdgeBackend {
  const driver = env.DB_DRIVER ?? 'hyperdrive';
  if (driver === 'supabase') {
    if (!env.SUPABASE_URL || !env.SUPABASE_SERVICE_ROLE_KEY) {
      throw new PreciseError('config_invalid', 'DB_DRIVER=supabase needs SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY');
    }
    const client = supabaseServiceClient(env.SUPABASE_URL, env.SUPABASE_SERVICE_ROLE_KEY);
    return {
      writer: supabaseEventWriter(client),
      metrics: supabaseMetricsReader(client),
      postbacks: supabasePostbackRecorder(client),
      webhooks: new Webhooks(supabaseWebhookStore(client), webhookEntries),
      keys: new KeyCache(supabaseKeyStore(client), { entries: keyEntries }),
      campaigns: new CampaignCache(supabaseCampaignStore(client), { entries: campaignEntries }),
      ping: () => pingSupabase(client),
      release: async () => {},
    };
  }
  if (driver !== 'hyperdrive') throw new PreciseError('config_invalid', `DB_DRIVER must be hyperdrive or supabase (got ${driver})`);
  const connectionString = env.HYPERDRIVE?.connectionString ?? env.DATABASE_URL;
  if (!connectionString) throw new PreciseError('config_invalid', 'no database: bind HYPERDRIVE or set DATABASE_URL');
  const db = openPostgresJs({ connectionString, max: 1, applicationName: 'precise-worker' });
  return {
    writer: sqlEventWriter(db),
    readDb: db,
    metrics: sqlMetricsReader(db),
    postbacks: sqlPostbackRecorder(db),
    webhooks: new Webhooks(sqlWebhookStore(db), webhookEntries),
    keys: new KeyCache(sqlKeyStore(db), { entries: keyEntries }),
    campaigns: new CampaignCache(sqlCampaignStore(db), { entries: campaignEntries }),
    ping: async () => void (await db.query('select 1')),
    // Not sql.end(): closing the socket makes postgres.js's Workers socket reject a pending
    // read with no one listening (an unhandled rejection per request). The runtime closes a
    // request's sockets when the request ends, and Hyperdrive keeps the real connections.
    release: async () => {},
  };
}

const LIMIT_NAMES = ['RATE_LIMIT_ADDRESS', 'RATE_LIMIT_KEY', 'RATE_LIMIT_KEY_LOOKUPS_PER_ADDRESS', 'RATE_LIMIT_KEY_LOOKUPS'] as const;
const isBinding = (value: unknown): value is RateLimitBinding => typeof (value as RateLimitBinding | undefined)?.limit === 'function';

// The isolate's own limiters (for limits without a binding) live as long as the isolate.
let isolateLimits: { vars: string; limits: RateLimits; corsOrigins: readonly string[] } | undefined;

/** Each limit from its `[[ratelimits]]` binding when there is one, else in the isolate. */
function edgeLimits(env: Bindings): { limits: RateLimits; corsOrigins: readonly string[] } {
  const vars = Object.fromEntries(
    [...LIMIT_NAMES, 'CORS_ORIGINS' as const].flatMap((name) => (typeof env[name] === 'string' ? [[name, env[name]]] : [])),
  );
  const key = JSON.stringify(vars);
  if (isolateLimits?.vars !== key) {
    const config = parseLimitsConfig(vars);
    isolateLimits = { vars: key, limits: inProcessLimits(config), corsOrigins: config.CORS_ORIGINS };
  }
  const pick = (name: (typeof LIMIT_NAMES)[number], own: keyof RateLimits) => {
    const binding = env[name];
    return isBinding(binding) ? bindingLimiter(binding) : isolateLimits!.limits[own];
  };
  return {
    limits: {
      address: pick('RATE_LIMIT_ADDRESS', 'address'),
      key: pick('RATE_LIMIT_KEY', 'key'),
      keyLookupsPerAddress: pick('RATE_LIMIT_KEY_LOOKUPS_PER_ADDRESS', 'keyLookupsPerAddress'),
      keyLookups: pick('RATE_LIMIT_KEY_LOOKUPS', 'keyLookups'),
    },
    corsOrigins: isolateLimits.corsOrigins,
  };
}

function edgeServices(env: Bindings): Services {
  if (!env.IP_HASH_SECRET) throw new PreciseError('config_invalid', 'IP_HASH_SECRET is not set (wrangler secret put IP_HASH_SECRET)');
  if (!env.PRECISE_SECRET) throw new PreciseError('config_invalid', 'PRECISE_SECRET is not set (wrangler secret put PRECISE_SECRET)');
  const backend = edgeBackend(env);
  const useQueue = env.EVENTS_QUEUE && env.INGEST_SINK !== 'direct';
  return {
    ping: backend.ping,
    keys: backend.keys,
    campaigns: backend.campaigns,
    postbacks: backend.postbacks,
    webhooks: backend.webhooks,
    metrics: backend.metrics,
    serverSecret: env.PRECISE_SECRET,
    sink: useQueue ? queueSink(env.EVENTS_QUEUE!) : directSink(backend.writer),
    ipHashSecret: env.IP_HASH_SECRET,
    clientIp: (c) => c.req.header('cf-connecting-ip') ?? undefined,
    ...edgeLimits(env),
    release: backend.release,
  };
}

const app = createApp({ services: edgeServices });

/**
 * Cron triggers, for a deployment without a Node worker: the rollup every minute, partition
 * upkeep daily ("7 0 * * *"). The same SQL functions as the pg-boss jobs; a run that finds
 * another one in progress (a Node worker, an overlapping trigger) returns skipped.
 */
async function runScheduled(cron: string, env: Bindings): Promise<void> {
  const backend = edgeBackend(env);
  if (!backend.readDb) throw new PreciseError('config_invalid', 'scheduled jobs need DB_DRIVER=hyperdrive');
  const job = cron === '7 0 * * *' ? partitionUpkeepJob : rollupJob;
  const result = await job.run(backend.readDb, {});
  console.log(`scheduled ${job.name}: ${JSON.stringify(result)}`);
}

export default {
  fetch: app.fetch,
  scheduled: (controller, env, ctx) => ctx.waitUntil(runScheduled(controller.cron, env)),
  async queue(batch, env) {
    const backend = edgeBackend(env);
    try {
      await consumeEventQueue(batch, backend.writer);
    } finally {
      await backend.release();
    }
  },
} satisfies ExportedHandler<Bindings, QueueMessage>;
