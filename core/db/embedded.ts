import { mkdir, open, readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { PGLiteSocketServer } from '@electric-sql/pglite-socket';
import type { PGlite } from '@electric-sql/pglite';
import { openPglite } from './pglite.ts';
import type { Database } from './port.ts';

/**
 * The embedded database: a PGlite directory under the data dir. Only one process may open it,
 * so the owner records itself in `stack.json` (the lock). A running `precise start` also
 * records the URL of the Postgres socket it serves the database on; other processes (the CLI,
 * psql, wrangler dev) connect there instead of opening the files.
 */
export interface StackState {
  pid: number;
  /** postgres:// URL of the socket, when the owner serves one */
  databaseUrl?: string;
  httpUrl?: string;
  startedAt: string;
}

export const pgliteDir = (dataDir: string) => path.resolve(dataDir, 'pglite');
const statePath = (dataDir: string) => path.resolve(dataDir, 'stack.json');

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The live owner of the data dir, if any (a stale file of a dead process is ignored). */
export async function readStackState(dataDir: string): Promise<StackState | null> {
  try {
    const state = JSON.parse(await readFile(statePath(dataDir), 'utf8')) as StackState;
    return isAlive(state.pid) && state.pid !== process.pid ? state : null;
  } catch {
    return null;
  }
}

export class DataDirBusyError extends Error {}

/** A process's hold on its data dir: what stack.json says about it, until released. */
export interface DataDirLock {
  update(state: Omit<StackState, 'pid' | 'startedAt'>): Promise<void>;
  release(): Promise<void>;
}

/** Takes the data dir for this process; throws DataDirBusyError when another live process has it. */
export async function lockDataDir(dataDir: string, state: Omit<StackState, 'pid' | 'startedAt'> = {}): Promise<DataDirLock> {
  await mkdir(path.resolve(dataDir), { recursive: true });
  const owner = await readStackState(dataDir);
  if (owner) {
    throw new DataDirBusyError(
      `the embedded database in ${dataDir} is in use by process ${owner.pid}` +
        (owner.databaseUrl ? ` (serving ${owner.databaseUrl})` : ''),
    );
  }
  await rm(statePath(dataDir), { force: true });
  // 'wx' fails if another process created the file since we looked: no two owners.
  const handle = await open(statePath(dataDir), 'wx');
  const write = async (next: Omit<StackState, 'pid' | 'startedAt'>) => {
    const full: StackState = { pid: process.pid, startedAt: new Date().toISOString(), ...next };
    await handle.truncate(0);
    await handle.write(JSON.stringify(full, null, 2), 0);
  };
  await write(state);
  return {
    update: write,
    release: async () => {
      await handle.close();
      await rm(statePath(dataDir), { force: true });
    },
  };
}

export async function openEmbeddedPglite(dataDir: string): Promise<Database & { pglite: PGlite }> {
  await mkdir(pgliteDir(dataDir), { recursive: true });
  return openPglite({ dataDir: pgliteDir(dataDir) });
}

export interface PgliteSocket {
  databaseUrl: string;
  stop(): Promise<void>;
}

/** Serves a PGlite database on a Postgres socket; PGlite-socket multiplexes clients (transaction-aware). */
export async function servePglite(pglite: PGlite, port: number, host = '127.0.0.1'): Promise<PgliteSocket> {
  const server = new PGLiteSocketServer({ db: pglite, port, host, maxConnections: 32 });
  await server.start();
  // "host:port", with the port the OS chose when asked for port 0
  const boundPort = Number(server.getServerConn().split(':').pop());
  return {
    databaseUrl: `postgres://postgres:postgres@${host}:${boundPort}/postgres?sslmode=disable`,
    stop: () => server.stop(),
  };
}
