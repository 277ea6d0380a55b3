import { createApp } from './app.ts';
import { openPostgres } from '../core/db/postgres.ts';
import type { Bindings } from './env.ts';
import type { Database } from '../core/db/port.ts';

/**
 * The Cloudflare Worker entry. The database is Postgres through Hyperdrive (or DATABASE_URL
 * for `wrangler dev` against a local database). Hyperdrive pools connections at the edge, so
 * the Worker keeps one small pool per isolate and per connection string.
 */
const pools = new Map<string, Database>();

function databaseFor(env: Bindings): Database {
  const connectionString = env.HYPERDRIVE?.connectionString ?? env.DATABASE_URL;
  if (!connectionString) throw new Error('no database: bind HYPERDRIVE or set DATABASE_URL');
  let db = pools.get(connectionString);
  if (!db) {
    db = openPostgres({ connectionString, max: 5, applicationName: 'precise-worker' });
    pools.set(connectionString, db);
  }
  return db;
}

const app = createApp({ database: databaseFor });

export default {
  fetch: app.fetch,
} satisfies ExportedHandler<Bindings>;
