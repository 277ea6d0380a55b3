import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { main } from '../../cli/main.ts';
import { openEmbeddedPglite } from '../../core/db/embedded.ts';
import type { Database } from '../../core/db/port.ts';
import { BACKEND, createEmptyDatabase, type TestDatabase } from './database.ts';

export interface CliRun {
  code: number;
  out: string;
  err: string;
  /** stdout parsed as JSON (for --json runs) */
  json: any;
}

/**
 * A place for the CLI to work: on Postgres a fresh database given as DATABASE_URL; on PGlite
 * an empty data dir, which the CLI opens (and migrates) itself, as on a developer's machine.
 */
export interface CliSandbox {
  env: Record<string, string>;
  run(...argv: string[]): Promise<CliRun>;
  /** Looks at the database between CLI runs (PGlite: opens the data dir while no CLI holds it). */
  inspect<T>(fn: (db: Database) => Promise<T>): Promise<T>;
  dispose(): Promise<void>;
}

/** Runs the CLI in this process with the given environment, capturing what it prints. */
export async function runCli(env: Record<string, string | undefined>, ...argv: string[]): Promise<CliRun> {
  const out: string[] = [];
  const err: string[] = [];
  const code = await main(argv, {
    out: (text) => out.push(text),
    err: (text) => err.push(text),
    env,
    stopSignal: () => new Promise(() => {}),
  });
  const stdout = out.join('\n');
  let json: unknown;
  try {
    json = JSON.parse(stdout);
  } catch {
    json = undefined;
  }
  return { code, out: stdout, err: err.join('\n'), json };
}

export async function createCliSandbox(): Promise<CliSandbox> {
  const dataDir = await mkdtemp(path.join(tmpdir(), 'precise-cli-'));
  let database: TestDatabase | undefined;
  const env: Record<string, string> = { PRECISE_DATA_DIR: dataDir };
  if (BACKEND === 'postgres') {
    database = await createEmptyDatabase();
    env.DATABASE_URL = database.url!;
  }
  return {
    env,
    run: (...argv) => runCli(env, ...argv),
    async inspect(fn) {
      if (database) return fn(database.db);
      const db = await openEmbeddedPglite(dataDir);
      try {
        return await fn(db);
      } finally {
        await db.close();
      }
    },
    async dispose() {
      await database?.drop();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}
