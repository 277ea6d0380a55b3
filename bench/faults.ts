/**
 * Fault benchmark (issue 10): pixels sent through the Node server while Postgres restarts (fast
 * shutdown, and a crash: immediate shutdown and WAL recovery), and while the server is SIGKILLed
 * and restarted, by a sender that retries until it gets a 2xx. Prints, per scenario: sent,
 * acknowledged (2xx), stored (distinct pixels in `events`), lost (acknowledged, not stored:
 * must be 0) and extra (stored rows beyond one per pixel: must be 0 when pixels carry an `eid`,
 * the client event id the server dedups on). A control server that answers before its write
 * commits is SIGKILLed the same way: its loss shows that the count would see one.
 *   npm run bench:faults [-- --short] [-- --pixels 20000 --rate 1000 --faults 3 --record]
 * Needs root and Debian's postgresql-common (pg_createcluster): it creates a throwaway cluster
 * (default `precisefaults` on port 5599), restarts only that one, and drops it at the end.
 */
import { execFile, type ChildProcess } from 'node:child_process';
import { forkTypeScript } from './fork.ts';
import { randomUUID } from 'node:crypto';
import { existsSync, readdirSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import os from 'node:os';
import { pathToFileURL } from 'node:url';
import { parseArgs, promisify } from 'node:util';
import { publishReport } from './report.ts';
import { createApiKey, createOrganization } from '../core/admin.ts';
import { openPostgres } from '../core/db/postgres.ts';
import type { Database } from '../core/db/port.ts';

const run = promisify(execFile);

/** postgres-restart: a fast shutdown (SIGINT) and start; postgres-crash: an immediate one (SIGQUIT: no checkpoint, WAL recovery) */
export type Fault = 'postgres-restart' | 'postgres-crash' | 'sigkill';
/** precise: the real server; ack-before-commit: the control, which answers before its write (bench/faults-server.ts) */
export type ServerMode = 'precise' | 'ack-before-commit';
export interface Scenario {
  fault: Fault;
  eids: boolean;
  server?: ServerMode;
}

export interface FaultOptions {
  /** pixels per scenario */
  pixels: number;
  /** pixels started per second (open loop, as browsers send them) */
  rate: number;
  /** faults injected per scenario, evenly spread over the load */
  faults: number;
  /** pixels in flight at once at most (the sender's connection budget) */
  concurrency: number;
  /** a sender gives a pixel up after this long without a 2xx */
  deadlineMs: number;
  scenarios: Scenario[];
  cluster: string;
  pgPort: number;
  log: (line: string) => void;
}

export interface ScenarioResult {
  scenario: string;
  fault: Fault;
  eids: boolean;
  server: ServerMode;
  faults: number;
  sent: number;
  /** pixels that got a 2xx */
  acknowledged: number;
  /** distinct pixels with at least one row */
  stored: number;
  /** acknowledged but not stored */
  lost: number;
  /** rows beyond one per stored pixel (a retry of a write that committed unanswered) */
  extra: number;
  /** pixels refused with a 4xx (a sender does not retry those) */
  refused: number;
  /** pixels given up at the deadline */
  unanswered: number;
  /** requests sent, retries included */
  requests: number;
  /** non-2xx answers and network errors seen by the sender */
  failures: number;
  seconds: number;
}

export const FULL: Pick<FaultOptions, 'pixels' | 'rate' | 'faults'> = { pixels: 20_000, rate: 1000, faults: 3 };
export const SHORT: Pick<FaultOptions, 'pixels' | 'rate' | 'faults'> = { pixels: 300, rate: 200, faults: 1 };
export const ALL_SCENARIOS: FaultOptions['scenarios'] = [
  { fault: 'postgres-restart', eids: true },
  { fault: 'postgres-restart', eids: false },
  { fault: 'postgres-crash', eids: true },
  { fault: 'sigkill', eids: true },
  { fault: 'sigkill', eids: false },
  { fault: 'sigkill', eids: true, server: 'ack-before-commit' },
];

/** Whether this machine can run the benchmark: root and pg_createcluster. */
export function canRunFaults(): boolean {
  return process.getuid?.() === 0 && existsSync('/usr/bin/pg_createcluster') && postgresVersion() !== undefined;
}

function postgresVersion(): string | undefined {
  if (!existsSync('/usr/lib/postgresql')) return undefined;
  return readdirSync('/usr/lib/postgresql').filter((v) => /^\d+$/.test(v)).sort((a, b) => Number(a) - Number(b)).at(-1);
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

// --- the throwaway cluster -------------------------------------------------------------------

interface Cluster {
  url: string;
  restart(mode: 'fast' | 'immediate'): Promise<void>;
  drop(): Promise<void>;
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function createCluster(name: string, port: number): Promise<Cluster> {
  const version = postgresVersion()!;
  const ctl = (action: string, ...rest: string[]) => run('pg_ctlcluster', ['--skip-systemctl-redirect', version, name, action, ...rest]);
  const drop = async () => void (await run('pg_dropcluster', ['--stop', version, name]).catch(() => {}));
  await drop(); // a leftover of an interrupted run
  // initdb's own fsync skipped (a throwaway cluster); the server itself runs with fsync on
  await run('pg_createcluster', [version, name, '-p', String(port), '--', '--auth=trust', '--no-sync']);
  await ctl('start');
  return {
    url: `postgres://postgres:postgres@127.0.0.1:${port}/postgres`,
    // What `pg_ctlcluster restart -m fast|immediate` does, but the stop lands the moment it is
    // asked for (the script's own start-up takes longer than a short load's tail).
    restart: async (mode) => {
      const pid = Number((await readFile(`/var/lib/postgresql/${version}/${name}/postmaster.pid`, 'utf8')).split('\n')[0]);
      process.kill(pid, mode === 'fast' ? 'SIGINT' : 'SIGQUIT');
      while (isAlive(pid)) await sleep(20);
      await ctl('start');
    },
    drop,
  };
}

// --- the server, in a child process ----------------------------------------------------------

interface ServerProcess {
  child: ChildProcess;
  url: string;
  port: number;
  mode: ServerMode;
}

async function startServer(databaseUrl: string, port: number, mode: ServerMode): Promise<ServerProcess> {
  const child = forkTypeScript(new URL('./faults-server.ts', import.meta.url), [], {
    env: { ...process.env, DATABASE_URL: databaseUrl, PORT: String(port), HOST: '127.0.0.1', FAULTS_SERVER: mode },
    stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
  });
  // its group-commit errors while the database is down are expected: kept off the report, the
  // last few KiB only, for a server that does not start
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => (stderr = (stderr + chunk.toString()).slice(-4096)));
  const url = await new Promise<string>((resolve, reject) => {
    child.once('message', (message) => resolve((message as { url: string }).url));
    child.once('exit', (code, signal) => reject(new Error(`faults server exited (${code ?? signal}) before listening:\n${stderr}`)));
  });
  return { child, url, port, mode };
}

async function stopServer(server: ServerProcess, signal: 'SIGTERM' | 'SIGKILL'): Promise<void> {
  if (server.child.exitCode !== null || server.child.signalCode !== null) return;
  const exited = new Promise((resolve) => server.child.once('exit', resolve));
  server.child.kill(signal);
  await exited;
}

async function freePort(): Promise<number> {
  const probe = createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const port = (probe.address() as { port: number }).port;
  await new Promise((resolve) => probe.close(resolve));
  return port;
}

// --- the sender ------------------------------------------------------------------------------

interface Load {
  acknowledged: Set<number>;
  refused: number;
  unanswered: number;
  requests: number;
  failures: number;
}

/**
 * A realistic pixel sender: pixels start at a fixed rate whatever the server's state (an SDK
 * buffers them), at most `concurrency` in flight; each is retried on a network error, a 5xx,
 * 408 or 429, with capped exponential backoff and jitter, until a 2xx or its deadline.
 */
async function sendPixels(
  urlOf: (seq: number) => string,
  options: Pick<FaultOptions, 'pixels' | 'rate' | 'concurrency' | 'deadlineMs'>,
  onAcknowledged: (count: number) => void,
): Promise<Load> {
  const load: Load = { acknowledged: new Set(), refused: 0, unanswered: 0, requests: 0, failures: 0 };
  const started = performance.now();
  let next = 0;
  const sendOne = async (seq: number) => {
    const deadline = performance.now() + options.deadlineMs;
    for (let attempt = 0; ; attempt += 1) {
      load.requests += 1;
      const status = await fetch(urlOf(seq), { signal: AbortSignal.timeout(10_000) }).then(
        async (response) => (await response.arrayBuffer(), response.status),
        () => 0,
      );
      if (status >= 200 && status < 300) {
        load.acknowledged.add(seq);
        onAcknowledged(load.acknowledged.size);
        return;
      }
      load.failures += 1;
      if (status >= 400 && status < 500 && status !== 408 && status !== 429) {
        load.refused += 1;
        return;
      }
      const backoff = Math.min(2000, 50 * 2 ** attempt) * (0.5 + Math.random() / 2);
      if (performance.now() + backoff > deadline) {
        load.unanswered += 1;
        return;
      }
      await sleep(backoff);
    }
  };
  const worker = async () => {
    for (let seq = next++; seq < options.pixels; seq = next++) {
      const due = started + (seq * 1000) / options.rate;
      if (due > performance.now()) await sleep(due - performance.now());
      await sendOne(seq);
    }
  };
  await Promise.all(Array.from({ length: options.concurrency }, worker));
  return load;
}

// --- scenarios -------------------------------------------------------------------------------

export async function runFaults(options: FaultOptions): Promise<ScenarioResult[]> {
  const t0 = performance.now();
  const elapsed = () => `${((performance.now() - t0) / 1000).toFixed(1)} s`;
  const cluster = await createCluster(options.cluster, options.pgPort);
  options.log(`cluster ${options.cluster} on port ${options.pgPort} up at ${elapsed()}`);
  const db = openPostgres({ connectionString: cluster.url, max: 2, applicationName: 'faults-bench' });
  // one server per mode, each on a port of its own; a SIGKILLed one comes back on the same port
  const servers = new Map<ServerMode, Promise<ServerProcess>>();
  const launch = async (mode: ServerMode, port?: number) => {
    const starting = startServer(cluster.url, port ?? (await freePort()), mode);
    servers.set(mode, starting);
    return starting;
  };
  try {
    await launch('precise'); // it migrates, as `precise start` does
    options.log(`server listening at ${elapsed()}`);
    // the control starts while the first scenarios run
    if (options.scenarios.some((s) => s.server === 'ack-before-commit')) void launch('ack-before-commit').catch(() => {});
    const org = await createOrganization(db, { name: 'Faults Co' });
    const pk = (await createApiKey(db, { orgId: org.id, kind: 'publishable' })).key;
    // a steady state: the first shutdown does not also flush everything the migrations wrote
    await db.query('checkpoint');
    const results: ScenarioResult[] = [];
    for (const scenario of options.scenarios) {
      const mode = scenario.server ?? 'precise';
      const server = await (servers.get(mode) ?? launch(mode));
      const name = scenarioName(scenario);
      options.log(`${name}: ${options.pixels} pixels at ${options.rate}/s, ${options.faults} fault(s)`);
      const injectFault = async () => {
        if (scenario.fault === 'postgres-restart') return cluster.restart('fast');
        if (scenario.fault === 'postgres-crash') return cluster.restart('immediate');
        const killed = await servers.get(mode)!;
        await stopServer(killed, 'SIGKILL');
        await launch(mode, killed.port);
      };
      // the control's buffer is written by a clean stop: what is missing after it was lost to a kill
      const settle = async () => {
        if (mode !== 'ack-before-commit') return;
        await stopServer(await servers.get(mode)!, 'SIGTERM');
        servers.delete(mode);
      };
      const result = await runScenario(name, scenario, options, { pk, base: server.url, db, injectFault, settle });
      options.log(`  ${formatRow(result)}`);
      results.push(result);
    }
    return results;
  } finally {
    for (const starting of servers.values()) await starting.then((server) => stopServer(server, 'SIGTERM'), () => {});
    await db.close().catch(() => {});
    await cluster.drop();
  }
}

export function scenarioName(scenario: Scenario): string {
  const control = scenario.server === 'ack-before-commit' ? ', control: 2xx before commit' : '';
  return `${scenario.fault}, ${scenario.eids ? 'with eid' : 'no eid'}${control}`;
}

async function runScenario(
  name: string,
  scenario: Scenario,
  options: FaultOptions,
  ctx: { pk: string; base: string; db: Database; injectFault: () => Promise<void>; settle: () => Promise<void> },
): Promise<ScenarioResult> {
  // each scenario's pixels are told apart by a run property (a campaign id would have to be created)
  const run = randomUUID().slice(0, 8);
  const urlOf = (seq: number) => {
    const params = new URLSearchParams({ key: ctx.pk, crv: 'crv-faults', 'p.run': run, 'p.seq': String(seq) });
    if (scenario.eids) params.set('eid', `px-${run}-${seq}`);
    return `${ctx.base}/v1/px?${params}`;
  };
  // fault i fires once i/(faults+1) of the pixels are acknowledged, while the rest are in flight
  const thresholds = Array.from({ length: options.faults }, (_, i) => Math.floor(((i + 1) * options.pixels) / (options.faults + 1)));
  let acknowledged = 0;
  let loadDone = false;
  let wake: (() => void) | undefined;
  let injected = 0;
  const faults = (async () => {
    for (const threshold of thresholds) {
      while (acknowledged < threshold && !loadDone) await new Promise<void>((resolve) => (wake = resolve));
      if (loadDone) return; // the load ended short of it (refusals): not injected, and reported so
      await ctx.injectFault();
      injected += 1;
    }
  })();
  const started = performance.now();
  const load = await sendPixels(urlOf, options, (count) => {
    acknowledged = count;
    wake?.();
  });
  loadDone = true;
  wake?.();
  await faults;
  const seconds = (performance.now() - started) / 1000;
  await ctx.settle();
  const stored = await storedPixels(ctx.db, run);
  const lost = [...load.acknowledged].filter((seq) => !stored.seqs.has(seq)).length;
  return {
    scenario: name,
    fault: scenario.fault,
    eids: scenario.eids,
    server: scenario.server ?? 'precise',
    faults: injected,
    sent: options.pixels,
    acknowledged: load.acknowledged.size,
    stored: stored.seqs.size,
    lost,
    extra: stored.rows - stored.seqs.size,
    refused: load.refused,
    unanswered: load.unanswered,
    requests: load.requests,
    failures: load.failures,
    seconds,
  };
}

/** The rows of a scenario, and the distinct pixels (p.seq) they hold; retried until Postgres answers. */
async function storedPixels(db: Database, run: string): Promise<{ rows: number; seqs: Set<number> }> {
  for (let attempt = 0; ; attempt += 1) {
    try {
      const { rows } = await db.query<{ seq: string; n: string }>(
        `select properties->>'seq' as seq, count(*) as n from events where properties->>'run' = $1 group by 1`,
        [run],
      );
      return { rows: rows.reduce((sum, row) => sum + Number(row.n), 0), seqs: new Set(rows.map((row) => Number(row.seq))) };
    } catch (error) {
      if (attempt >= 20) throw error;
      await sleep(500);
    }
  }
}

// --- report ----------------------------------------------------------------------------------

const HEADER = ['| scenario | faults | sent | acknowledged | stored | lost | extra | refused | unanswered | requests | s |', '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|'];

function formatRow(r: ScenarioResult): string {
  return `| ${r.scenario} | ${r.faults} | ${r.sent} | ${r.acknowledged} | ${r.stored} | ${r.lost} | ${r.extra} | ${r.refused} | ${r.unanswered} | ${r.requests} | ${r.seconds.toFixed(1)} |`;
}

export function formatTable(results: ScenarioResult[]): string {
  return [...HEADER, ...results.map(formatRow)].join('\n');
}

/** lost = 0 everywhere; extra = 0 where pixels carry an eid; the control must show a loss. */
export function verdicts(results: ScenarioResult[]): string[] {
  return results.map((r) => {
    if (r.server === 'ack-before-commit') return `${r.scenario}: lost ${r.lost} (the harness ${r.lost > 0 ? 'sees' : 'DID NOT SEE'} a loss)`;
    const ok = r.lost === 0 && (!r.eids || r.extra === 0);
    return `${r.scenario}: lost ${r.lost}${r.eids ? `, extra ${r.extra}` : ` (extra ${r.extra}: no eid, not deduped)`} ${ok ? 'met' : 'MISSED'}`;
  });
}

export function faultsMet(results: ScenarioResult[]): boolean {
  return results.every((r) => (r.server === 'ack-before-commit' ? r.lost > 0 : r.lost === 0 && (!r.eids || r.extra === 0)));
}

async function main() {
  const { values: args } = parseArgs({
    options: {
      short: { type: 'boolean', default: false },
      pixels: { type: 'string' },
      rate: { type: 'string' },
      faults: { type: 'string' },
      concurrency: { type: 'string', default: '64' },
      cluster: { type: 'string', default: 'precisefaults' },
      'pg-port': { type: 'string', default: '5599' },
      record: { type: 'boolean', default: false },
    },
  });
  if (!canRunFaults()) {
    console.error('bench:faults needs root and pg_createcluster (Debian postgresql-common)');
    process.exit(2);
  }
  const form = args.short ? SHORT : FULL;
  const options: FaultOptions = {
    pixels: Number(args.pixels ?? form.pixels),
    rate: Number(args.rate ?? form.rate),
    faults: Number(args.faults ?? form.faults),
    concurrency: Number(args.concurrency),
    deadlineMs: 60_000,
    scenarios: ALL_SCENARIOS,
    cluster: args.cluster,
    pgPort: Number(args['pg-port']),
    log: (line) => console.log(line),
  };
  const results = await runFaults(options);
  await publishReport([
    `### ${new Date().toISOString().slice(0, 10)}: ${os.cpus().length} cores, Postgres ${postgresVersion()} (a throwaway cluster) on the same machine`,
    '',
    `${options.pixels} pixels per scenario started at ${options.rate}/s, at most ${options.concurrency} in flight, ` +
      `${options.faults} fault(s) each (the i-th once i/${options.faults + 1} of the pixels were acknowledged); ` +
      `retries with backoff 25 ms–2 s until a 2xx or ${options.deadlineMs / 1000} s; Node ${process.versions.node}.`,
    '',
    formatTable(results),
    '',
    ...verdicts(results).map((line) => `- ${line}`),
    '',
  ], args.record);
  if (!faultsMet(results)) process.exitCode = 1;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) await main();
