import type { NodeConfig } from '../core/config.ts';
import { lockDataDir, openEmbeddedPglite, readStackState } from '../core/db/embedded.ts';
import { migrate } from '../core/db/migrate.ts';
import { openPostgres } from '../core/db/postgres.ts';
import type { Database } from '../core/db/port.ts';

/**
 * The database a CLI command works on: DATABASE_URL; else the socket of a running
 * `precise start`; else the embedded PGlite files, opened (and migrated) by this process alone.
 */
export async function withCliDatabase<T>(config: NodeConfig, fn: (db: Database) => Promise<T>): Promise<T> {
  if (config.DATABASE_URL) return withPostgres(config.DATABASE_URL, fn);

  const running = await readStackState(config.PRECISE_DATA_DIR);
  if (running?.databaseUrl) return withPostgres(running.databaseUrl, fn);

  const lock = await lockDataDir(config.PRECISE_DATA_DIR);
  try {
    const db = await openEmbeddedPglite(config.PRECISE_DATA_DIR);
    try {
      await migrate(db);
      return await fn(db);
    } finally {
      await db.close();
    }
  } finally {
    await lock.release();
  }
}

async function withPostgres<T>(connectionString: string, fn: (db: Database) => Promise<T>): Promise<T> {
  const db = openPostgres({ connectionString, max: 2, applicationName: 'precise-cli' });
  try {
    return await fn(db);
  } finally {
    await db.close();
  }
}
