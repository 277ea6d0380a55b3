import { PGlite, types } from '@electric-sql/pglite';
import type { Database, QueryResult, TransactionHandle } from './port.ts';

export interface PgliteOptions {
  /** A directory for a persistent database, or undefined for an in-memory one. */
  dataDir?: string;
}

// Match node-postgres: int8 and numeric stay exact strings.
const parsers = {
  [types.INT8]: (value: string) => value,
  [types.NUMERIC]: (value: string) => value,
};

/** Adapter for the embedded PGlite (Postgres compiled to WebAssembly, in this process). */
export async function openPglite(options: PgliteOptions = {}): Promise<Database & { pglite: PGlite }> {
  const pglite = await PGlite.create({ dataDir: options.dataDir, parsers });
  return wrapPglite(pglite);
}

export function wrapPglite(pglite: PGlite): Database & { pglite: PGlite } {
  const toResult = <Row>(result: { rows: unknown[]; affectedRows?: number }): QueryResult<Row> => ({
    rows: result.rows as Row[],
    rowCount: result.affectedRows ?? result.rows.length,
  });

  return {
    kind: 'pglite',
    pglite,
    query: async (text, params) => toResult(await pglite.query(text, params as unknown[] | undefined)),
    async exec(script) {
      await pglite.exec(script);
    },
    transaction: (fn) =>
      pglite.transaction(async (tx) => {
        const handle: TransactionHandle = {
          query: async (text, params) => toResult(await tx.query(text, params as unknown[] | undefined)),
          exec: async (script) => void (await tx.exec(script)),
        };
        return fn(handle);
      }),
    close: () => pglite.close(),
  };
}
