import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BACKEND, createEmptyDatabase, type TestDatabase } from '../helpers/database.ts';
import { main } from '../../cli/main.ts';
import { runCli } from '../helpers/cli.ts';
import { startStackProcess } from '../helpers/stack.ts';

const PRECISE = fileURLToPath(new URL('../../cli/precise.mjs', import.meta.url));

/** `precise start` as a real child process, the way `npm start` runs it. */
const startPrecise = (env: Record<string, string>) => startStackProcess(env, 60_000);

describe(`npm start (${BACKEND})`, () => {
  let dataDir: string;
  let database: TestDatabase | undefined;
  let env: Record<string, string>;

  beforeAll(async () => {
    dataDir = await mkdtemp(path.join(tmpdir(), 'precise-start-'));
    env = { PRECISE_DATA_DIR: dataDir };
    if (BACKEND === 'postgres') {
      database = await createEmptyDatabase();
      env.DATABASE_URL = database.url!;
    } else {
      env.DATABASE_URL = '';
    }
  });
  afterAll(async () => {
    await database?.drop();
    await rm(dataDir, { recursive: true, force: true });
  });

  it('comes up healthy, serves the CLI and psql, stops cleanly on SIGTERM and finds its data again', async () => {
    const started = performance.now();
    const first = await startPrecise(env);
    const health = await fetch(`${first.httpUrl}/healthz`);
    const bootSeconds = (performance.now() - started) / 1000;
    expect(health.status).toBe(200);
    expect(await health.json()).toMatchObject({ status: 'ok', database: { ok: true } });
    expect(bootSeconds).toBeLessThan(60);

    if (BACKEND === 'pglite') {
      // The embedded database is reachable by any Postgres client at the printed URL.
      expect(first.databaseUrl).toMatch(/^postgres:\/\/postgres:postgres@127\.0\.0\.1:\d+\/postgres/);
      const client = new pg.Client({ connectionString: first.databaseUrl });
      await client.connect();
      const tables = await client.query(`select count(*)::int as n from pg_tables where schemaname = 'public'`);
      expect(tables.rows[0].n).toBeGreaterThan(13);
      await client.end();
    }

    // The CLI works while the stack runs: on PGlite it goes through the running stack's socket.
    const out: string[] = [];
    const code = await main(['org', 'create', '--name', 'Survives Restarts', '--json'], {
      out: (text) => out.push(text),
      err: (text) => out.push(text),
      env,
      stopSignal: () => new Promise(() => {}),
    });
    expect(code).toBe(0);
    const orgId = JSON.parse(out.join('')).id as string;

    // pg-boss ran the partition upkeep job at start, and jobs status says so
    await expect.poll(() => first.output(), { timeout: 20_000 }).toMatch(/jobs: partition-upkeep done/);
    const status = await runCli(env, 'jobs', 'status', '--json');
    expect(status.code).toBe(0);
    const upkeep = status.json.jobs.find((job: { name: string }) => job.name === 'partition-upkeep');
    const rollupJob = status.json.jobs.find((job: { name: string }) => job.name === 'rollup');
    expect(upkeep).toMatchObject({ cron: '7 0 * * *', failures: 0, last_output: { daysAhead: 14 } });
    expect(upkeep.last_completed_at).not.toBeNull();
    expect(rollupJob).toMatchObject({ cron: '* * * * *' });
    expect(status.json.rollups.map((rollup: { name: string }) => rollup.name)).toEqual(['alert_webhooks', 'attribution', 'creative_fatigue', 'metrics_15m']);

    // a separate job worker joins the same database, and stops cleanly too
    const worker = spawn(process.execPath, [PRECISE, 'worker'], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let workerOutput = '';
    worker.stdout!.on('data', (chunk) => (workerOutput += chunk));
    worker.stderr!.on('data', (chunk) => (workerOutput += chunk));
    const workerExited = new Promise<number | null>((resolve) => worker.once('exit', (code) => resolve(code)));
    await expect.poll(() => workerOutput, { timeout: 30_000 }).toMatch(/precise worker is running/);
    expect(workerOutput).not.toMatch(/postgres:postgres@/);
    worker.kill('SIGTERM');
    expect(await workerExited).toBe(0);
    expect(workerOutput).toMatch(/SIGTERM: stopping\s+stopped/);

    first.child.kill('SIGTERM');
    expect(await first.exited).toBe(0);
    expect(first.output()).toMatch(/SIGTERM: stopping\s+stopped/);
    expect(existsSync(path.join(dataDir, 'stack.json'))).toBe(false);

    const second = await startPrecise(env);
    try {
      expect((await fetch(`${second.httpUrl}/healthz`)).status).toBe(200);
      expect(second.output()).toMatch(/0 migration\(s\) applied/);
      const url = second.databaseUrl ?? env.DATABASE_URL!;
      const client = new pg.Client({ connectionString: url });
      await client.connect();
      const found = await client.query('select name from organizations where id = $1', [orgId]);
      await client.end();
      expect(found.rows).toEqual([{ name: 'Survives Restarts' }]);
    } finally {
      second.child.kill('SIGTERM');
      expect(await second.exited).toBe(0);
    }
  });

  it('refuses to start a worker with no database to work on', async () => {
    const lonely = await runCli({ PRECISE_DATA_DIR: dataDir, DATABASE_URL: '' }, 'worker');
    expect(lonely.code).toBe(2);
    expect(lonely.err).toMatch(/needs DATABASE_URL, or a running precise start/);
  });

  it('refuses a bad configuration with the variable named', async () => {
    const child = spawn(process.execPath, [PRECISE, 'start'], {
      env: { ...process.env, ...env, PORT: 'eighty' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (chunk) => (stderr += chunk));
    const code = await new Promise((resolve) => child.once('exit', resolve));
    expect(code).toBe(1);
    expect(stderr).toMatch(/PORT: /);
  });
});
