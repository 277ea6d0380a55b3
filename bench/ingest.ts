/**
 * Ingestion benchmark (not a test): measures and prints, beside the ceilings measured in the
 * same run.
 *   npm run bench:ingest [-- --requests 60000 --connections 200 --batch 100 --batch-requests 1500 --record]
 * Needs a Postgres server: BENCH_DATABASE_URL or DATABASE_URL (default
 * postgres://postgres:postgres@127.0.0.1:5432/postgres); a fresh database is created for the run
 * and dropped after.
 *   (a) ceiling: the Precise server answering the pixel without writing anything
 *   (b) Precise's pixel with durable writes (group commit)
 *   (c) naive: one INSERT per request through a pool of 10, answered after its commit
 *   (d) the batch API, in events per second, against
 *   (e) a raw COPY of the same number of rows of the same shape
 *   (f) the Worker under workerd (wrangler dev: Miniflare's queue and Hyperdrive), relative to (a)
 * Each run sends a fixed number of requests and waits for every answer, so that after it the
 * rows in the database can be checked against the 2xx responses exactly.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { forkTypeScript } from './fork.ts';
import { randomUUID } from 'node:crypto';
import os from 'node:os';
import { parseArgs } from 'node:util';
import { pipeline } from 'node:stream/promises';
import { Readable } from 'node:stream';
import autocannon from 'autocannon';
import pg from 'pg';
import { from as copyFrom } from 'pg-copy-streams';
import { publishReport } from './report.ts';
import { createApiKey, createCampaign, createOrganization } from '../core/admin.ts';
import { createBenchDatabase } from './bench-database.ts';

const { values: args } = parseArgs({
  options: {
    /** pixel requests per run (each run ends when every request has its answer) */
    requests: { type: 'string', default: '60000' },
    /** batch requests in the batch run */
    'batch-requests': { type: 'string', default: '1500' },
    connections: { type: 'string', default: '200' },
    batch: { type: 'string', default: '100' },
    record: { type: 'boolean', default: false },
    'skip-workerd': { type: 'boolean', default: false },
  },
});
const REQUESTS = Number(args.requests);
const BATCH_REQUESTS = Number(args['batch-requests']);
const CONNECTIONS = Number(args.connections);
const BATCH = Number(args.batch);
const CHROME = 'Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36';

let dbUrl: URL;

interface Run {
  label: string;
  eventsPerSecond: number;
  p50: number;
  p99: number;
  ok: number;
  errors: number;
  rows: number;
  check: boolean;
}

const log = (line: string) => process.stdout.write(`${line}\n`);

async function main() {
  const bench = await createBenchDatabase('precise_bench', 4);
  const { db } = bench;
  dbUrl = new URL(bench.url);
  const children: ChildProcess[] = [];
  try {
    const org = await createOrganization(db, { name: 'Bench Co' });
    const pk = (await createApiKey(db, { orgId: org.id, kind: 'publishable' })).key;
    const sk = (await createApiKey(db, { orgId: org.id, kind: 'secret', scopes: ['ingest'] })).key;
    // events count only under campaigns their organization owns
    const newCampaign = async () => (await createCampaign(db, { orgId: org.id, name: `bench ${randomUUID().slice(0, 8)}` })).id;
    const rowsOf = async (campaign: string) =>
      Number((await db.query<{ n: string }>('select count(*) as n from events where campaign_id = $1', [campaign])).rows[0]!.n);

    log(`machine: ${os.cpus().length} cores (${os.cpus()[0]?.model}), ${Math.round(os.totalmem() / 2 ** 30)} GiB; node ${process.versions.node}`);
    log(`load: autocannon, ${CONNECTIONS} connections, ${REQUESTS} pixel requests per run, from this process; servers in their own\n`);

    const pixelRun = async (label: string, mode: string, port: number): Promise<Run> => {
      const server = await startServer(mode, port, children);
      await warmUp(`http://127.0.0.1:${port}/v1/px?key=${pk}&cmp=${randomUUID()}`);
      const campaign = await newCampaign();
      const result = await load({
        url: `http://127.0.0.1:${port}/v1/px?key=${pk}&cmp=${campaign}&crv=crv-1&uid=u-1&p.slot=top`,
        headers: { 'user-agent': CHROME },
        amount: REQUESTS,
      }, label);
      server.kill('SIGTERM');
      const rows = await rowsOf(campaign);
      return { label, ...result, rows, check: mode === 'ceiling' ? rows === 0 : rows === result.ok };
    };

    /** Latency without the queueing of 200 closed-loop connections: the same run with 20. */
    const fewConnections = async (): Promise<Run> => {
      const port = 18106;
      const server = await startServer('precise', port, children);
      const campaign = await newCampaign();
      const result = await load(
        {
          url: `http://127.0.0.1:${port}/v1/px?key=${pk}&cmp=${campaign}&crv=crv-1&uid=u-1&p.slot=top`,
          headers: { 'user-agent': CHROME },
          amount: Math.round(REQUESTS / 2),
          connections: 20,
        },
        '(b) with 20 connections',
      );
      server.kill('SIGTERM');
      const rows = await rowsOf(campaign);
      return { label: '(b) Precise pixel, 20 connections', ...result, rows, check: rows === result.ok };
    };

    const a = await pixelRun('(a) ceiling: pixel, no write', 'ceiling', 18101);
    const b = await pixelRun('(b) Precise pixel, durable', 'precise', 18102);
    const c = await pixelRun('(c) naive INSERT per request', 'naive', 18103);
    const bFew = await fewConnections();

    // (d) batch API
    const server = await startServer('precise', 18104, children);
    const batchCampaign = await newCampaign();
    const body = JSON.stringify({
      events: Array.from({ length: BATCH }, (_, i) => ({
        type: i % 10 === 0 ? 'click' : 'impression',
        campaign_id: batchCampaign,
        creative_id: `crv-${i % 7}`,
        user_key: `u-${i}`,
        properties: { slot: 'top' },
      })),
    });
    const batchResult = await load({
      url: 'http://127.0.0.1:18104/v1/events',
      method: 'POST',
      headers: { authorization: `Bearer ${sk}`, 'content-type': 'application/json', 'user-agent': CHROME },
      body,
      amount: BATCH_REQUESTS,
    }, '(d) batch API');
    server.kill('SIGTERM');
    const dRows = await rowsOf(batchCampaign);
    const d: Run = {
      label: `(d) batch API, ${BATCH} events/request`,
      eventsPerSecond: batchResult.eventsPerSecond * BATCH,
      p50: batchResult.p50,
      p99: batchResult.p99,
      ok: batchResult.ok * BATCH,
      errors: batchResult.errors,
      rows: dRows,
      check: dRows === batchResult.ok * BATCH,
    };

    // (e) raw COPY of as many rows of the same shape
    const e = await copyRun(org.id, Math.max(dRows, 50_000), rowsOf);

    let f: Run | undefined;
    if (!args['skip-workerd']) f = await workerdRun(pk, await newCampaign(), rowsOf, children);

    const runs = [a, b, bFew, c, d, e, ...(f ? [f] : [])];
    const table = [
      '| run | events/s | p50 ms | p99 ms | 2xx | non-2xx | rows | rows = 2xx |',
      '|---|---:|---:|---:|---:|---:|---:|---|',
      ...runs.map(
        (r) =>
          `| ${r.label} | ${Math.round(r.eventsPerSecond)} | ${r.p50} | ${r.p99} | ${r.ok} | ${r.errors} | ${r.rows} | ${r.check ? 'yes' : 'NO'} |`,
      ),
    ];
    const ratio = (x: number, y: number) => (x / y).toFixed(2);
    const targets = [
      `b/a = ${ratio(b.eventsPerSecond, a.eventsPerSecond)} (target ≥ 0.7) ${b.eventsPerSecond >= 0.7 * a.eventsPerSecond ? 'met' : 'MISSED'}`,
      `b/c = ${ratio(b.eventsPerSecond, c.eventsPerSecond)} (target ≥ 3) ${b.eventsPerSecond >= 3 * c.eventsPerSecond ? 'met' : 'MISSED'}`,
      `d/e = ${ratio(d.eventsPerSecond, e.eventsPerSecond)} (target ≥ 0.5) ${d.eventsPerSecond >= 0.5 * e.eventsPerSecond ? 'met' : 'MISSED'}`,
      `pixel p99 at b's rate = ${b.p99} ms (target < 25) ${b.p99 < 25 ? 'met' : 'MISSED'}; ` +
        `200 closed-loop connections at ${Math.round(b.eventsPerSecond)}/s queue ${Math.round((200 / b.eventsPerSecond) * 1000)} ms on average (Little's law); ` +
        `with 20 connections p99 is ${bFew.p99} ms at ${Math.round(bFew.eventsPerSecond)}/s`,
      ...(f ? [`workerd pixel (Miniflare, local) / a = ${ratio(f.eventsPerSecond, a.eventsPerSecond)} (relative figure only)`] : []),
    ];
    await publishReport([
      `### ${new Date().toISOString().slice(0, 10)}: ${os.cpus().length} cores, ${Math.round(os.totalmem() / 2 ** 30)} GiB, Postgres on the same machine`,
      '',
      `autocannon from a separate process, ${CONNECTIONS} connections, ${REQUESTS} pixel requests per run, ${BATCH_REQUESTS} × ${BATCH} events for the batch API; Node ${process.versions.node}.`,
      '',
      ...table,
      '',
      ...targets.map((t) => `- ${t}`),
      '',
    ], args.record);
    if (runs.some((r) => !r.check)) process.exitCode = 1;
  } finally {
    for (const child of children) child.kill('SIGKILL');
    await bench.drop();
  }
}

async function startServer(mode: string, port: number, children: ChildProcess[]): Promise<ChildProcess> {
  const child = forkTypeScript(new URL('./server.ts', import.meta.url), [mode, dbUrl.toString(), String(port)], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  children.push(child);
  await new Promise<void>((resolve, reject) => {
    child.once('message', () => resolve());
    child.once('exit', (code) => reject(new Error(`bench server ${mode} exited with ${code}`)));
  });
  return child;
}

/** A few thousand requests first, so that no run measures a cold process (JIT, caches, pools). */
async function warmUp(url: string) {
  await new Promise<void>((resolve, reject) =>
    autocannon({ url, connections: 50, amount: 3000, headers: { 'user-agent': CHROME } }, (error) => (error ? reject(error) : resolve())),
  );
}

/** autocannon against a URL, with a progress bar; events/s counts 2xx answers only. */
async function load(options: autocannon.Options, label: string) {
  const started = performance.now();
  const result = await new Promise<autocannon.Result>((resolve, reject) => {
    const instance = autocannon({ connections: CONNECTIONS, ...options }, (error, done) =>
      error ? reject(error) : resolve(done),
    );
    autocannon.track(instance, {
      renderProgressBar: true,
      renderResultsTable: false,
      renderLatencyTable: false,
      progressBarString: `${label} [:bar] :percent`,
    });
  });
  const ok = result['2xx'];
  return {
    // measured here: autocannon's own duration is coarse
    eventsPerSecond: ok / ((performance.now() - started) / 1000),
    p50: result.latency.p50,
    p99: result.latency.p99,
    ok,
    errors: result.non2xx + result.errors + result.timeouts,
  };
}

/** Waits until the row count stops growing (a queue drains) or reaches what was acknowledged. */
async function settle(count: () => Promise<number>, expected: number, timeoutMs = 60_000) {
  const deadline = Date.now() + timeoutMs;
  let last = -1;
  while (Date.now() < deadline) {
    const now = await count();
    if (now >= expected || (now === last && now > 0)) return;
    last = now;
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

async function copyRun(orgId: string, rows: number, rowsOf: (campaign: string) => Promise<number>): Promise<Run> {
  const campaign = randomUUID();
  const client = new pg.Client({ connectionString: dbUrl.toString() });
  await client.connect();
  const now = new Date().toISOString();
  const context = JSON.stringify({ source: 'batch', bot: false, device: { type: 'desktop', browser: 'Chrome', os: 'macOS' } });
  function* lines() {
    for (let i = 0; i < rows; i += 1) {
      yield `${orgId}\t${randomUUID()}\t${i % 10 === 0 ? 'click' : 'impression'}\t${now}\t${now}\t${campaign}\tcrv-${i % 7}\tu-${i}\t{"slot": "top"}\t${context}\n`;
    }
  }
  log(`(e) raw COPY of ${rows} rows`);
  const started = performance.now();
  await pipeline(
    Readable.from(lines()),
    client.query(copyFrom('copy events (org_id, event_id, type, occurred_at, received_at, campaign_id, creative_id, user_key, properties, context) from stdin')),
  );
  const seconds = (performance.now() - started) / 1000;
  await client.end();
  const stored = await rowsOf(campaign);
  return { label: '(e) raw COPY, same rows', eventsPerSecond: rows / seconds, p50: 0, p99: 0, ok: rows, errors: 0, rows: stored, check: stored === rows };
}

async function workerdRun(pk: string, campaign: string, rowsOf: (campaign: string) => Promise<number>, children: ChildProcess[]): Promise<Run> {
  const port = 18105;
  log('(f) starting the Worker under wrangler dev (workerd, Miniflare queue, Hyperdrive to the bench database)');
  const child = spawn(
    'npx',
    ['wrangler', 'dev', '--port', String(port), '--ip', '127.0.0.1', '--var', 'IP_HASH_SECRET:bench-secret-0123456789abcdef', '--var', 'PRECISE_SECRET:bench-server-secret-0123456789-0123456789', '--log-level', 'error'],
    {
      env: { ...process.env, WRANGLER_SEND_METRICS: 'false', CLOUDFLARE_HYPERDRIVE_LOCAL_CONNECTION_STRING_HYPERDRIVE: dbUrl.toString() },
      stdio: ['ignore', 'ignore', 'inherit'],
      detached: true,
    },
  );
  children.push(child);
  const deadline = Date.now() + 90_000;
  for (;;) {
    const up = await fetch(`http://127.0.0.1:${port}/healthz`).then((r) => r.ok, () => false);
    if (up) break;
    if (Date.now() > deadline) throw new Error('wrangler dev did not come up');
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
  const result = await load(
    { url: `http://127.0.0.1:${port}/v1/px?key=${pk}&cmp=${campaign}&crv=crv-1&uid=u-1`, headers: { 'user-agent': CHROME }, amount: Math.min(REQUESTS, 20_000) },
    '(f) workerd pixel',
  );
  await settle(() => rowsOf(campaign), result.ok, 120_000);
  const rows = await rowsOf(campaign);
  try {
    process.kill(-child.pid!, 'SIGTERM');
  } catch {}
  return { label: '(f) workerd pixel (wrangler dev)', ...result, rows, check: rows === result.ok };
}

await main();
