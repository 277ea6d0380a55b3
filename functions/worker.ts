import { KeyCache, sqlKeyStore } from '../core/auth.ts';
import { openPostgres } from '../core/db/postgres.ts';
import { PreciseError } from '../core/errors.ts';
import { pingSupabase, supabaseEventWriter, supabaseKeyStore, supabaseServiceClient } from '../core/ingest/supabase.ts';
import { sqlEventWriter, type EventWriter } from '../core/ingest/writer.ts';
import { createApp } from './app.ts';
import type { Bindings, Services } from './env.ts';
import { consumeEventQueue } from './queue-consumer.ts';
import { directSink } from './sinks/direct.ts';
import { queueSink, type QueueMessage } from './sinks/queue.ts';

/**
 * The Cloudflare Worker entry: `fetch` serves the Hono app; `queue` consumes the event queue
 * (and its dead-letter queue). Services are built once per isolate and binding set.
 * The database is Postgres through Hyperdrive (DB_DRIVER=hyperdrive, the default) or Supabase
 * through supabase-js rpc (DB_DRIVER=supabase); both call the same SQL functions.
 */
interface EdgeBackend {
  writer: EventWriter;
  keys: KeyCache;
  ping(): Promise<void>;
}

const backends = new Map<string, EdgeBackend>();

export function edgeBackend(env: Bindings): EdgeBackend {
  const driver = env.DB_DRIVER ?? 'hyperdrive';
  if (driver === 'supabase') {
    if (!env.SUPABASE_URL || !env.SUPABASE_SERVICE_ROLE_KEY) {
      throw new PreciseError('config_invalid', 'DB_DRIVER=supabase needs SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY');
    }
    const id = `supabase ${env.SUPABASE_URL}`;
    let backend = backends.get(id);
    if (!backend) {
      const client = supabaseServiceClient(env.SUPABASE_URL, env.SUPABASE_SERVICE_ROLE_KEY);
      backend = { writer: supabaseEventWriter(client), keys: new KeyCache(supabaseKeyStore(client)), ping: () => pingSupabase(client) };
      backends.set(id, backend);
    }
    return backend;
  }
  if (driver !== 'hyperdrive') throw new PreciseError('config_invalid', `DB_DRIVER must be hyperdrive or supabase (got ${driver})`);
  const connectionString = env.HYPERDRIVE?.connectionString ?? env.DATABASE_URL;
  if (!connectionString) throw new PreciseError('config_invalid', 'no database: bind HYPERDRIVE or set DATABASE_URL');
  let backend = backends.get(connectionString);
  if (!backend) {
    // Hyperdrive pools at the edge; a few connections per isolate are plenty.
    const db = openPostgres({ connectionString, max: 5, applicationName: 'precise-worker' });
    backend = { writer: sqlEventWriter(db), keys: new KeyCache(sqlKeyStore(db)), ping: async () => void (await db.query('select 1')) };
    backends.set(connectionString, backend);
  }
  return backend;
}

const services = new WeakMap<object, Services>();

function edgeServices(env: Bindings): Services {
  let built = services.get(env);
  if (!built) {
    const backend = edgeBackend(env);
    const useQueue = env.EVENTS_QUEUE && env.INGEST_SINK !== 'direct';
    if (!env.IP_HASH_SECRET) throw new PreciseError('config_invalid', 'IP_HASH_SECRET is not set (wrangler secret put IP_HASH_SECRET)');
    built = {
      ping: backend.ping,
      keys: backend.keys,
      sink: useQueue ? queueSink(env.EVENTS_QUEUE!) : directSink(backend.writer),
      ipHashSecret: env.IP_HASH_SECRET,
      clientIp: (c) => c.req.header('cf-connecting-ip') ?? undefined,
    };
    services.set(env, built);
  }
  return built;
}

const app = createApp({ services: edgeServices });

export default {
  fetch: app.fetch,
  queue: (batch, env) => consumeEventQueue(batch, edgeBackend(env).writer),
} satisfies ExportedHandler<Bindings, QueueMessage>;
