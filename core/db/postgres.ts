import pg from 'pg';
import type { Database, QueryResult, TransactionHandle } from './port.ts';

export interface PostgresOptions {
  connectionString: string;
  /** Pool size; Hyperdrive and PgBouncer pool again behind it. */
  max?: number;
  applicationName?: string;
}

/** Adapter for any Postgres (Supabase, stock, Hyperdrive, the embedded PGlite socket) through node-postgres. */
export function openPostgres(options: PostgresOptions): Database & { pool: pg.Pool } {
  const pool = new pg.Pool({
    connectionString: options.connectionString,
    max: options.max ?? 10,
    application_name: options.applicationName ?? 'precise',
    // Same value shapes as the PGlite adapter: timestamptz as Date (pg's default), int8 and
    // numeric as exact strings (pg's default), json parsed (pg's default).
  });
  // An idle client losing its connection must not crash the process; the pool replaces it.
  pool.on('error', () => {});

  const run = async <Row>(client: pg.Pool | pg.PoolClient, text: string, params?: readonly unknown[]): Promise<QueryResult<Row>> => {
    const result = await client.query(text, params as unknown[] | undefined);
    return { rows: result.rows as Row[], rowCount: result.rowCount ?? 0 };
  };

  return {
    kind: 'postgres',
    pool,
    query: (text, params) => run(pool, text, params),
    async exec(script) {
      await pool.query(script);
    },
    async transaction(fn) {
      const client = await pool.connect();
      try {
        await client.query('begin');
        const tx: TransactionHandle = {
          query: (text, params) => run(client, text, params),
          exec: async (script) => void (await client.query(script)),
        };
        const value = await fn(tx);
        await client.query('commit');
        return value;
      } catch (error) {
        await client.query('rollback').catch(() => {});
        throw error;
      } finally {
        client.release();
      }
    },
    close: () => pool.end(),
  };
}

