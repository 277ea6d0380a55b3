import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const PRECISE = fileURLToPath(new URL('../../cli/precise.mjs', import.meta.url));

export interface RunningStack {
  child: ChildProcess;
  httpUrl: string;
  /** the embedded database's Postgres socket (PGlite only) */
  databaseUrl?: string;
  output: () => string;
  exited: Promise<number | null>;
  /** SIGTERM, then the exit code once it has stopped. */
  stop: () => Promise<number | null>;
}

/**
 * `precise start` as a real child process, the way `npm start` runs it, on any free ports
 * unless `env` says otherwise. Resolves once it prints that it is running.
 */
export async function startStackProcess(env: Record<string, string>, timeoutMs = 90_000): Promise<RunningStack> {
  const child = spawn(process.execPath, [PRECISE, 'start'], {
    env: { ...process.env, PORT: '0', PRECISE_PG_PORT: '0', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout!.on('data', (chunk) => (output += chunk));
  child.stderr!.on('data', (chunk) => (output += chunk));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline && child.exitCode === null) {
    const running = /precise is running: (http:\/\/\S+)/.exec(output);
    if (running) {
      const stop = () => {
        if (child.exitCode === null) child.kill('SIGTERM');
        return exited;
      };
      const socket = /served at (postgres:\/\/\S+)/.exec(output);
      return { child, httpUrl: running[1]!, databaseUrl: socket?.[1], output: () => output, exited, stop };
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  child.kill('SIGKILL');
  throw new Error(`precise start did not come up:\n${output}`);
}

/** Are these commands on the PATH (bash, curl, jq, …)? */
export function hasCommands(...names: string[]): boolean {
  return names.every((name) => spawnSync('sh', ['-c', `command -v ${name}`], { stdio: 'ignore' }).status === 0);
}
