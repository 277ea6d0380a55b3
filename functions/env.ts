import type { Database } from '../core/db/port.ts';

/** Bindings of the Worker (wrangler.toml); on Node the same names come from process.env. */
export interface Bindings {
  HYPERDRIVE?: { connectionString: string };
  DATABASE_URL?: string;
}

export interface Variables {
  requestId: string;
  db: Database;
}

export interface AppEnv {
  Bindings: Bindings;
  Variables: Variables;
}
