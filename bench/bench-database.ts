import pg from 'pg';
import { migrate } from '../core/db/migrate.ts';
import { openPostgres } from '../core/db/postgres.ts';

/**
 * A fresh, migrated database for one benchmark run, on BENCH_DATABASE_URL or DATABASE_URL's
 * server (default the local one), dropped by `drop()` (`close()` leaves it). The URL carries a password because
 * Hyperdrive (and Miniflare's) insist on one; trust auth ignores it.
 */
export async function createBenchDatabase(prefix: string, poolSize: number) {
  const serverUrl = new URL(process.env.BENCH_DATABASE_URL ?? process.env.DATABASE_URL ?? 'postgres://postgres:postgres@127.0.0.1:5432/postgres');
  if (!serverUrl.password) serverUrl.password = 'postgres';
  const name = `${prefix}_${Date.now().toString(36)}`;
  const url = new URL(serverUrl.toString());
  url.pathname = `/${name}`;
  const admin = new pg.Client({ connectionString: serverUrl.toString() });
  await admin.connect();
  await admin.query(`create database ${name}`);
  const db = openPostgres({ connectionString: url.toString(), max: poolSize });
  await migrate(db);
  return {
    db,
    url: url.toString(),
    /** Closes the connections and leaves the database (--keep). */
    async close() {
      await db.close();
      await admin.end();
    },
    async drop() {
      await db.close();
      await admin.query(`drop database if exists ${name} with (force)`);
      await admin.end();
    },
  };
}
