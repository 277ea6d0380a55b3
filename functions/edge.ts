import type { AttributionMath } from '../core/attribution-query.ts';
import type { FatigueMath } from '../core/fatigue-query.ts';
import { parseLimitsConfig } from '../core/config.ts';
import { openPostgresJs } from '../core/db/postgres-js.ts';
import type { Queryable } from '../core/db/port.ts';
import { supabaseServiceClient } from '../core/db/supabase-client.ts';
import { PreciseError } from '../core/errors.ts';
import { bindingLimiter, inProcessLimits, type RateLimitBinding, type RateLimits } from '../core/rate-limit.ts';
import { TtlCacheEntries } from '../core/ttl-cache.ts';
import { createApp } from './app.ts';
import type { Bindings, Services } from './env.ts';
import { consumeEventQueue } from './queue-consumer.ts';
import { createServices, sqlStores, supabaseStores, type SharedCaches, type Stores } from './services.ts';
import { directSink } from './sinks/direct.ts';
import { queueSink, type QueueMessage } from './sinks/queue.ts';

/**
 * The Cloudflare Worker's wiring: `fetch` serves the Hono app; `queue` consumes the event queue
 * (and its dead-letter queue). Workers may not share I/O between requests, so each request
 * (or queue delivery) opens its own database client, which Hyperdrive makes cheap; only the
 * caches' entries live on in the isolate.
 * The database is Postgres through Hyperdrive (DB_DRIVER=hyperdrive, the default) or Supabase
 * through supabase-js rpc (DB_DRIVER=supabase); both call the same SQL functions.
 */
interface EdgeBackend {
  stores: Stores;
  /** SQL access for the scheduled jobs; absent on the Supabase rpc path. */
  readDb?: Queryable;
  release(): Promise<void>;
}

// The caches' stored entries outlive a request: the isolate's, shared by each request's caches.
const isolateCaches: SharedCaches = {
  keys: new TtlCacheEntries(),
  campaigns: new TtlCacheEntries(),
  webhooks: { integrations: new TtlCacheEntries(), campaigns: new TtlCacheEntries() },
};

export function edgeBackend(env: Bindings): EdgeBackend {
  const driver = env.DB_DRIVER ?? 'hyperdrive';
  if (driver === 'supabase') {
    if (!env.SUPABASE_URL || !env.SUPABASE_SERVICE_ROLE_KEY) {
      throw new PreciseError('config_invalid', 'DB_DRIVER=supabase needs SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY');
    }
    return { stores: supabaseStores(supabaseServiceClient(env.SUPABASE_URL, env.SUPABASE_SERVICE_ROLE_KEY)), release: async () => {} };
  }
  if (driver !== 'hyperdrive') throw new PreciseError('config_invalid', `DB_DRIVER must be hyperdrive or supabase (got ${driver})`);
  const connectionString = env.HYPERDRIVE?.connectionString ?? env.DATABASE_URL;
  if (!connectionString) throw new PreciseError('config_invalid', 'no database: bind HYPERDRIVE or set DATABASE_URL');
  const db = openPostgresJs({ connectionString, max: 1, applicationName: 'precise-worker' });
  return {
    stores: sqlStores(db),
    readDb: db,
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

function edgeServices(env: Bindings, attributionMath: AttributionMath, fatigueMath: FatigueMath): Services {
  if (!env.IP_HASH_SECRET) throw new PreciseError('config_invalid', 'IP_HASH_SECRET is not set (wrangler secret put IP_HASH_SECRET)');
  if (!env.PRECISE_SECRET) throw new PreciseError('config_invalid', 'PRECISE_SECRET is not set (wrangler secret put PRECISE_SECRET)');
  const { stores, release } = edgeBackend(env);
  const useQueue = env.EVENTS_QUEUE && env.INGEST_SINK !== 'direct';
  return createServices({
    stores,
    sink: useQueue ? queueSink(env.EVENTS_QUEUE!) : directSink(stores.writer),
    serverSecret: env.PRECISE_SECRET,
    ipHashSecret: env.IP_HASH_SECRET,
    clientIp: (c) => c.req.header('cf-connecting-ip') ?? undefined,
    ...edgeLimits(env),
    caches: isolateCaches,
    release,
    attributionMath,
    fatigueMath,
  });
}

/**
 * HTTP (the Hono app) and the event queue's consumer; the Worker entry (worker.ts) passes the
 * attribution models and the fatigue detector in (functions/ does not import scheduled/) and adds
 * the cron jobs.
 */
export function edgeHandlers(attributionMath: AttributionMath, fatigueMath: FatigueMath) {
  const app = createApp({ services: (env) => edgeServices(env, attributionMath, fatigueMath) });
  return {
    fetch: app.fetch,
    async queue(batch, env) {
      const backend = edgeBackend(env);
      try {
        await consumeEventQueue(batch, backend.stores.writer);
      } finally {
        await backend.release();
      }
    },
  } satisfies ExportedHandler<Bindings, QueueMessage>;
}
