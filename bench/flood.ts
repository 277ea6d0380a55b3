/**
 * Flood benchmark (not a test): does a flood of made-up keys hurt another tenant?
 *   npm run bench:flood [-- --seconds 10 --connections 20 --tenant-rate 600 --flood-rate 1500 --flood-connections 100 --record]
 * Needs a Postgres server: BENCH_DATABASE_URL or DATABASE_URL (default
 * postgres://postgres:postgres@127.0.0.1:5432/postgres); a fresh database is created and dropped.
 * The server is `npm start`'s HTTP stack (nodeServices + startHttpServer, default limits) with
 * TRUST_PROXY=true, in its own process; the tenant's load runs here, the flood in a third process.
 *   (a) one tenant's valid pixels alone: the ceiling the flooded runs are measured against
 *   (b) the same, during a flood of random pk_ keys, each from a random x-forwarded-for address
 *   (c) the same, during a flood of random pk_ keys from one address
 *   (d) as (b), on a server with every rate limit off (the split key cache alone)
 *   (e) control: the same flood rate of requests that present no key (404): plain HTTP load
 * The flood runs at a fixed rate (default 1,500/s: the rate of the flood in issue 10's finding,
 * 14,862 keys in 10 s); target: the tenant keeps ≥ 80 % of (a) in (b) and (c).
 */
import type { ChildProcess } from 'node:child_process';
import { forkTypeScript } from './fork.ts';
import { randomBytes, randomUUID } from 'node:crypto';
import net from 'node:net';
import os from 'node:os';
import { parseArgs } from 'node:util';
import autocannon from 'autocannon';
import { publishReport } from './report.ts';
import { createApiKey, createOrganization } from '../core/admin.ts';
import { KeyCache, sqlKeyStore } from '../core/auth.ts';
import { parseNodeConfig } from '../core/config.ts';
import { openPostgres } from '../core/db/postgres.ts';
import { generateKey } from '../core/keys.ts';
import { createBenchDatabase } from './bench-database.ts';
import { nodeServices, startHttpServer } from '../functions/node.ts';
import * as attributionModels from '../scheduled/attribution/models.ts';
import * as fatigueDetector from '../scheduled/fatigue/detector.ts';

const { values: args, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    seconds: { type: 'string', default: '10' },
    /** the tenant's closed-loop connections */
    connections: { type: 'string', default: '20' },
    /**
     * the tenant's requests per second, sent at that rate whatever the answers (open loop, as
     * pages send pixels); unset: closed loop, as fast as the server answers (its capacity)
     */
    'tenant-rate': { type: 'string' },
    /** flood requests per second (fixed rate), over this many connections */
    'flood-rate': { type: 'string', default: '1500' },
    'flood-connections': { type: 'string', default: '100' },
    /** rounds of all runs; each figure is the median round */
    rounds: { type: 'string', default: '3' },
    record: { type: 'boolean', default: false },
    // internal: this file also runs as the server and as the flood generator
    serve: { type: 'boolean', default: false },
    flood: { type: 'boolean', default: false },
  },
});
const SECONDS = Number(args.seconds);
const CHROME = 'Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36';
const log = (line: string) => process.stdout.write(`${line}\n`);

/** Server mode: the Node stack on a database, counting its key lookups (for the report). */
async function serve([databaseUrl, port, limits]: string[]) {
  const off = limits === 'off' ? { RATE_LIMIT_ADDRESS: 'off', RATE_LIMIT_KEY: 'off', RATE_LIMIT_KEY_LOOKUPS_PER_ADDRESS: 'off', RATE_LIMIT_KEY_LOOKUPS: 'off' } : {};
  const config = parseNodeConfig({ ...process.env, TRUST_PROXY: 'true', IP_HASH_SECRET: 'bench-secret-0123456789abcdef', ...off });
  const db = openPostgres({ connectionString: databaseUrl!, max: 10, applicationName: 'bench-flood' });
  const services = nodeServices(db, config, 'bench-server-secret-0123456789-0123456789', attributionModels, fatigueDetector);
  let lookups = 0;
  const store = sqlKeyStore(db);
  services.keys = new KeyCache({ findByHash: (hash) => ((lookups += 1), store.findByHash(hash)) });
  await startHttpServer({ services, port: Number(port), host: '127.0.0.1', limits: config });
  process.on('message', (message) => {
    if (message === 'lookups') process.send?.({ lookups });
  });
  process.send?.('ready');
}

/**
 * Flood mode: random pk_ keys at a fixed rate, from random addresses or from one. A raw-socket
 * generator (keep-alive, one request in flight per connection) rather than autocannon: on two
 * shared cores the load generator's own CPU would otherwise be most of what the flood costs.
 */
async function flood([url, addresses]: string[]) {
  const { hostname, port } = new URL(url!);
  const octet = () => randomBytes(1)[0]!;
  const address = () => (addresses === 'one' ? '198.51.100.66' : `${10 + (octet() % 200)}.${octet()}.${octet()}.${1 + (octet() % 254)}`);
  const request = () =>
    `GET ${addresses === 'plain' ? '/v1/nope?' : '/v1/px?key='}${generateKey('publishable')} HTTP/1.1\r\nHost: ${hostname}\r\nUser-Agent: ${CHROME}\r\nX-Forwarded-For: ${address()}\r\n\r\n`;
  const byStatus: Record<string, number> = {};
  let requests = 0;
  let skipped = 0;
  let errors = 0;
  const idle: net.Socket[] = [];
  const sockets = await Promise.all(
    Array.from({ length: Number(args['flood-connections']) }, () => new Promise<net.Socket>((resolve, reject) => {
      const socket = net.connect(Number(port), hostname, () => resolve(socket));
      socket.setNoDelay(true);
      socket.once('error', reject);
    })),
  );
  for (const socket of sockets) {
    let buffer = Buffer.alloc(0);
    socket.on('error', () => (errors += 1));
    socket.on('data', (chunk) => {
      buffer = buffer.length ? Buffer.concat([buffer, chunk]) : chunk;
      for (;;) {
        const headerEnd = buffer.indexOf('\r\n\r\n');
        if (headerEnd < 0) return;
        const head = buffer.subarray(0, headerEnd).toString('latin1');
        const length = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? 0);
        if (buffer.length < headerEnd + 4 + length) return;
        const status = head.slice(9, 12);
        byStatus[status] = (byStatus[status] ?? 0) + 1;
        buffer = buffer.subarray(headerEnd + 4 + length);
        idle.push(socket);
      }
    });
    idle.push(socket);
  }
  const perTick = Number(args['flood-rate']) / 100;
  let owed = 0;
  const deadline = performance.now() + SECONDS * 1000;
  await new Promise<void>((resolve) => {
    const timer = setInterval(() => {
      if (performance.now() >= deadline) return clearInterval(timer), resolve();
      owed += perTick;
      for (; owed >= 1; owed -= 1) {
        const socket = idle.pop();
        if (!socket) skipped += 1;
        else {
          socket.write(request());
          requests += 1;
        }
      }
    }, 10);
  });
  await new Promise((resolve) => setTimeout(resolve, 500)); // the last answers
  for (const socket of sockets) socket.destroy();
  process.send?.({ requests, byStatus, errors, skipped });
}

interface Run {
  label: string;
  tenantPerSecond: number;
  p99: number;
  tenantOk: number;
  tenantOther: number;
  flood?: { requests: number; byStatus: Record<string, number>; errors: number; skipped: number };
  lookups: number;
}

async function main() {
  const bench = await createBenchDatabase('precise_flood', 2);
  const { db } = bench;
  const dbUrl = new URL(bench.url);
  const children: ChildProcess[] = [];
  try {
    const org = await createOrganization(db, { name: 'Tenant Co' });
    const pk = (await createApiKey(db, { orgId: org.id, kind: 'publishable' })).key;
    log(`machine: ${os.cpus().length} cores (${os.cpus()[0]?.model}); node ${process.versions.node}`);
    log(`tenant: ${args.connections} closed-loop connections for ${SECONDS} s; flood: ${args['flood-rate']} random pk_ keys/s over ${args['flood-connections']} connections\n`);

    const run = async (label: string, port: number, floodFrom?: 'many' | 'one' | 'plain', limits = 'default'): Promise<Run> => {
      const server = await child(['--serve', dbUrl.toString(), String(port), limits], children);
      const base = `http://127.0.0.1:${port}`;
      await tenantLoad(`${base}/v1/px?key=${pk}&cmp=${randomUUID()}`, 3, 'warm-up');
      const before = await lookupsOf(server);
      const flooding = floodFrom ? child(['--flood', `--seconds=${SECONDS + 1}`, `--flood-rate=${args['flood-rate']}`, `--flood-connections=${args['flood-connections']}`, base, floodFrom], children, 'result') : undefined;
      if (floodFrom) await new Promise((resolve) => setTimeout(resolve, 500)); // the flood is under way
      const tenant = await tenantLoad(`${base}/v1/px?key=${pk}&cmp=${randomUUID()}&uid=u-1`, SECONDS, label);
      const floodResult = flooding ? ((await (await flooding).result) as Run['flood']) : undefined;
      const lookups = (await lookupsOf(server)) - before;
      server.process.kill('SIGTERM');
      return { label, ...tenant, flood: floodResult, lookups };
    };

    // Rounds of every run, interleaved, and the median of each: this machine is shared.
    const plans: Array<[string, 'many' | 'one' | 'plain' | undefined, string]> = [
      ['(a) tenant alone', undefined, 'default'],
      ['(b) flood from random addresses', 'many', 'default'],
      ['(c) flood from one address', 'one', 'default'],
      ['(d) as (b), every rate limit off', 'many', 'off'],
      ['(e) control: as many requests without a key (404)', 'plain', 'default'],
    ];
    const rounds: Run[][] = plans.map(() => []);
    for (let round = 0; round < Number(args.rounds); round += 1) {
      for (const [i, [label, from, limits]] of plans.entries()) rounds[i]!.push(await run(label, 18201 + i, from, limits));
    }
    const median = (of: Run[]) => [...of].sort((x, y) => x.tenantPerSecond - y.tenantPerSecond)[Math.floor(of.length / 2)]!;
    const runs = rounds.map(median);
    const [a, b, c] = runs as [Run, Run, Run];
    const spread = rounds.map((of) => `${of[0]!.label.slice(0, 3)} ${of.map((r) => Math.round(r.tenantPerSecond)).join(' / ')}`).join('; ');

    const ratio = (r: Run) => r.tenantPerSecond / a.tenantPerSecond;
    const floodCell = (r: Run) =>
      r.flood
        ? `${r.flood.requests} (${Object.entries(r.flood.byStatus).map(([code, n]) => `${n}×${code}`).join(', ')}${r.flood.errors ? `, ${r.flood.errors} errors` : ''}${r.flood.skipped ? `; ${r.flood.skipped} not sent: every connection busy` : ''})`
        : '';
    const table = [
      '| run | tenant 2xx/s | / (a) | tenant p99 ms | tenant non-2xx | flood requests (by status) | key lookups in the database |',
      '|---|---:|---:|---:|---:|---|---:|',
      ...runs.map(
        (r) => `| ${r.label} | ${Math.round(r.tenantPerSecond)} | ${ratio(r).toFixed(2)} | ${r.p99} | ${r.tenantOther} | ${floodCell(r)} | ${r.lookups} |`,
      ),
    ];
    const met = (r: Run) => (ratio(r) >= 0.8 ? 'met' : 'MISSED');
    const targets = [
      `flood from random addresses: tenant at ${(ratio(b) * 100).toFixed(0)} % of alone (target ≥ 80 %) ${met(b)}`,
      `flood from one address: tenant at ${(ratio(c) * 100).toFixed(0)} % of alone (target ≥ 80 %) ${met(c)}`,
    ];
    await publishReport([
      `### ${new Date().toISOString().slice(0, 10)}: flood, ${os.cpus().length} cores, Postgres on the same machine`,
      '',
      `Tenant: autocannon in the bench process, ${args.connections} connections, ${args['tenant-rate'] ? `open loop at ${args['tenant-rate']} requests/s` : 'closed loop (as fast as answered)'}, ${SECONDS} s per run, one valid pk_ key; flood: a raw-socket generator in its own process at ${args['flood-rate']} requests/s over ${args['flood-connections']} keep-alive connections; server: the Node stack with default limits, TRUST_PROXY=true, in its own process; Node ${process.versions.node}. ${args.rounds} rounds, interleaved; each row is the median round (tenant 2xx/s of every round: ${spread}).`,
      '',
      ...table,
      '',
      ...targets.map((t) => `- ${t}`),
      '',
    ], args.record);
  } finally {
    for (const c of children) c.kill('SIGKILL');
    await bench.drop();
  }
}

/** This file in another process; resolves when it says `ready` (or, with 'result', when it answers). */
async function child(argv: string[], children: ChildProcess[], waitFor: 'ready' | 'result' = 'ready') {
  const process_ = forkTypeScript(new URL(import.meta.url), argv, { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  children.push(process_);
  const result = await new Promise<unknown>((resolve, reject) => {
    process_.once('message', resolve);
    process_.once('exit', (code) => reject(new Error(`bench child ${argv[0]} exited with ${code}`)));
  });
  return { process: process_, result: waitFor === 'result' ? result : undefined };
}

async function lookupsOf(server: { process: ChildProcess }): Promise<number> {
  server.process.send('lookups');
  return new Promise((resolve) =>
    server.process.once('message', (message) => resolve((message as { lookups: number }).lookups)),
  );
}

async function tenantLoad(url: string, seconds: number, label: string) {
  const started = performance.now();
  const result = await new Promise<autocannon.Result>((resolve, reject) => {
    const instance = autocannon(
      {
        url,
        connections: Number(args.connections),
        duration: seconds,
        headers: { 'user-agent': CHROME, 'x-forwarded-for': '203.0.113.10' },
        ...(args['tenant-rate'] ? { overallRate: Number(args['tenant-rate']) } : {}),
      },
      (error, done) => (error ? reject(error) : resolve(done)),
    );
    if (label !== 'warm-up') {
      autocannon.track(instance, { renderProgressBar: true, renderResultsTable: false, renderLatencyTable: false, progressBarString: `${label} [:bar] :percent` });
    }
  });
  const ok = result['2xx'];
  return { tenantPerSecond: ok / ((performance.now() - started) / 1000), p99: result.latency.p99, tenantOk: ok, tenantOther: result.non2xx + result.errors + result.timeouts };
}

if (args.serve) await serve(positionals);
else if (args.flood) await flood(positionals);
else await main();
