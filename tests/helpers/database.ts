import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { migrate } from '../../core/db/migrate.ts';
import { servePglite, type PgliteSocket } from '../../core/db/embedded.ts';
import { openPglite } from '../../core/db/pglite.ts';
import { openPostgres } from '../../core/db/postgres.ts';
import type { Database, TransactionHandle } from '../../core/db/port.ts';

/**
 * The backend under test: `postgres` when DATABASE_URL is set (CI's second run), else the
 * embedded PGlite. Every test file gets a database of its own; never a mock.
 */
export const BACKEND: 'postgres' | 'pglite' = process.env.DATABASE_URL ? 'postgres' : 'pglite';

export interface TestDatabase {
  db: Database;
  /** A postgres:// URL of this database (postgres backend only). */
  url?: string;
  /**
   * A postgres:// URL other clients (the CLI, a child process) can use: the server's on
   * Postgres; on PGlite the in-memory database served through pglite-socket, as `npm start` does.
   * Do not query through both at the same moment on PGlite.
   */
  connectionUrl(): Promise<string>;
  drop(): Promise<void>;
}

export async function createEmptyDatabase(): Promise<TestDatabase> {
  if (BACKEND === 'pglite') {
    const db = await openPglite();
    let socket: PgliteSocket | undefined;
    return {
      db,
      async connectionUrl() {
        socket ??= await servePglite(db.pglite, 0);
        return socket.databaseUrl;
      },
      drop: async () => {
        await socket?.stop();
        await db.close();
      },
    };
  }
  const server = new URL(process.env.DATABASE_URL!);
  const name = `precise_test_${Date.now().toString(36)}_${randomBytes(4).toString('hex')}`;
  const admin = new pg.Client({ connectionString: server.toString() });
  await admin.connect();
  await admin.query(`create database ${name}`);
  await admin.end();
  const url = new URL(server.toString());
  url.pathname = `/${name}`;
  // Hyperdrive (and Miniflare's) insist on a password; trust auth ignores it.
  if (!url.password) url.password = 'postgres';
  const db = openPostgres({ connectionString: url.toString(), max: 5, applicationName: 'precise-test' });
  return {
    db,
    url: url.toString(),
    connectionUrl: async () => url.toString(),
    drop: async () => {
      await db.close();
      const cleanup = new pg.Client({ connectionString: server.toString() });
      await cleanup.connect();
      await cleanup.query(`drop database if exists ${name} with (force)`);
      await cleanup.end();
    },
  };
}

export async function createTestDatabase(): Promise<TestDatabase> {
  const test = await createEmptyDatabase();
  await migrate(test.db);
  return test;
}

/**
 * Runs `fn` the way Supabase runs an API request of a signed-in user: as the role
 * `authenticated` with the JWT claims in request.jwt.claims, inside a transaction that is
 * rolled back, so a test can try writes without leaving them behind.
 */
export async function asUser<T>(db: Database, userId: string | null, fn: (tx: TransactionHandle) => Promise<T>): Promise<T> {
  const rollback = new Error('rollback');
  let result: T | undefined;
  try {
    await db.transaction(async (tx) => {
      const role = userId ? 'authenticated' : 'anon';
      await tx.query(`select set_config('request.jwt.claims', $1, true)`, [
        JSON.stringify(userId ? { sub: userId, role } : { role }),
      ]);
      await tx.query(`set local role ${role}`);
      result = await fn(tx);
      throw rollback;
    });
  } catch (error) {
    if (error !== rollback) throw error;
  }
  return result as T;
}

/** The SQLSTATE of a failed query, or undefined when it succeeded. */
export async function sqlState(run: () => Promise<unknown>): Promise<string | undefined> {
  try {
    await run();
    return undefined;
  } catch (error) {
    return (error as { code?: string }).code ?? 'unknown';
  }
}

/** Runs one statement inside a savepoint, so a refused write does not abort the test's transaction. */
export async function attempt(
  tx: TransactionHandle,
  text: string,
  params: readonly unknown[] = [],
): Promise<{ rowCount: number; rows: Record<string, unknown>[]; code?: string }> {
  await tx.query('savepoint attempt');
  try {
    const result = await tx.query(text, params);
    await tx.query('release savepoint attempt');
    return { rowCount: result.rowCount, rows: result.rows };
  } catch (error) {
    await tx.query('rollback to savepoint attempt');
    return { rowCount: 0, rows: [], code: (error as { code?: string }).code ?? 'unknown' };
  }
}

/**
 * Holds the rollup's lock in a transaction of its own, as a rollup running in another worker
 * process would, until the returned function is called (Postgres only: PGlite has one session).
 */
export function holdRollupLock(db: Database): Promise<() => Promise<void>> {
  return holdInTransaction(db, `select pg_advisory_xact_lock(hashtext('precise.rollup.metrics_15m'))`);
}

/**
 * Runs a statement in a transaction of its own and keeps that transaction open (its locks held,
 * its writes uncommitted), as another session would, until the returned function commits it
 * (Postgres only: PGlite has one session).
 */
export async function holdInTransaction(db: Database, statement: string): Promise<() => Promise<void>> {
  let release!: () => void;
  const gate = new Promise<void>((resolve) => (release = resolve));
  let held!: () => void;
  const holding = new Promise<void>((resolve) => (held = resolve));
  const other = db.transaction(async (tx) => {
    await tx.query(statement);
    held();
    await gate;
  });
  await Promise.race([holding, other]);
  return async () => {
    release();
    await other;
  };
}
