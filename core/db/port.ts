/**
 * The database port: the one small interface every part of Precise talks to the database
 * through. SQL stays plain and identical on every backend; adapters only move text, params
 * and rows. Values come back the same on every adapter: int8 and numeric as strings (exact),
 * timestamptz as Date, json/jsonb parsed.
 */
export interface QueryResult<Row> {
  rows: Row[];
  /** Rows inserted, updated or deleted (0 for a plain SELECT on some drivers: count rows instead). */
  rowCount: number;
}

export interface Queryable {
  query<Row = Record<string, unknown>>(text: string, params?: readonly unknown[]): Promise<QueryResult<Row>>;
}

export type DatabaseKind = 'postgres' | 'pglite';

export interface Database extends Queryable {
  readonly kind: DatabaseKind;
  /** Runs `fn` in one transaction: COMMIT when it resolves, ROLLBACK when it throws. */
  transaction<T>(fn: (tx: TransactionHandle) => Promise<T>): Promise<T>;
  /** Runs a script of several statements without parameters (migrations, bootstrap). */
  exec(script: string): Promise<void>;
  close(): Promise<void>;
}

/** A transaction's handle can also run scripts (a migration file runs inside its transaction). */
export interface TransactionHandle extends Queryable {
  exec(script: string): Promise<void>;
}
