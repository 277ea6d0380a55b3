import postgres from 'postgres';
import type { Database, QueryResult, TransactionHandle } from './port.ts';

/**
 * Adapter for Postgres through postgres.js: the driver of the Worker (it speaks over
 * `cloudflare:sockets` in workerd and through Hyperdrive) and an alternative on Node.
 * Values come back as on the other adapters: int8 and numeric as strings, timestamptz as Date,
 * json parsed.
 */
export function openPostgresJs(options: { connectionString: string; max?: number; applicationName?: string }): Database {
  const sql = postgres(options.connectionString, {
    max: options.max ?? 5,
    // Hyperdrive caches prepared statements itself; unnamed statements keep both happy.
    prepare: false,
    // A Worker opens a connection per request: skip the type-metadata round trip (queries
    // return arrays as JSON where they need them).
    fetch_types: false,
    connection: { application_name: options.applicationName ?? 'precise' },
    onnotice: () => {},
    types: {
      // numeric and int8 as exact strings, like node-postgres
      numeric: { to: 1700, from: [1700], serialize: String, parse: (value: string) => value },
      bigint: { to: 20, from: [20], serialize: String, parse: (value: string) => value },
    },
  });

  const run = async <Row>(client: postgres.Sql | postgres.TransactionSql, text: string, params?: readonly unknown[]): Promise<QueryResult<Row>> => {
    const result = await client.unsafe(text, (params ?? []) as postgres.ParameterOrJSON<never>[]);
    return { rows: [...result] as Row[], rowCount: result.count ?? result.length };
  };

  return {
    kind: 'postgres',
    query: (text, params) => run(sql, text, params),
    async exec(script) {
      await sql.unsafe(script);
    },
    transaction: <T>(fn: (tx: TransactionHandle) => Promise<T>) =>
      sql.begin(async (tx) =>
        fn({
          query: (text, params) => run(tx, text, params),
          exec: async (script) => void (await tx.unsafe(script)),
        }),
      ) as Promise<T>,
    close: () => sql.end({ timeout: 5 }),
  };
}
