/**
 * Attribution benchmark (issue 12; not a test): measures and prints, beside a floor measured in
 * the same run.
 *   npm run bench:attribution [-- --paths 1000000,2000000 --increment 10000 --record]
 * On the local Postgres (BENCH_DATABASE_URL / DATABASE_URL), in a fresh database dropped after,
 * loaded by COPY. `--paths N` is a history of N converting and N non-converting users (paths)
 * of about 4 touches each (2 to 6; 30 % clicks within the 7-day click window, views within the
 * 1-day view window) over 20 campaigns and --creatives creatives (1,000), conversions over 30
 * days. For each history size, smallest first:
 *   (a) a bare SQL query that reads the same touches and groups them into ordered paths per user
 *       (the floor for any attribution over raw events);
 *   (b) the attribution job's full build, from nothing (target ≤ 3 × a);
 *   (c) one incremental step of --increment new converting users on top (target: flat in
 *       history, the largest within 1.5 × the smallest);
 *   (d) GET /v1/attribution's work (queryAttribution over the SQL reader) for all seven models
 *       over the 30 days at dimension=campaign and at dimension=creative (target < 2 × a).
 */
import os from 'node:os';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { from as copyFrom } from 'pg-copy-streams';
import { createOrganization } from '../core/admin.ts';
import { MODELS, queryAttribution, sqlAttributionReader } from '../core/attribution-query.ts';
import type { Database, Queryable } from '../core/db/port.ts';
import * as models from '../scheduled/attribution/models.ts';
import { runAttribution } from '../scheduled/jobs/attribution.ts';
import { createBenchDatabase } from './bench-database.ts';
import { publishReport } from './report.ts';

const { values: args } = parseArgs({
  options: {
    paths: { type: 'string', default: '1000000,2000000' },
    increment: { type: 'string', default: '10000' },
    creatives: { type: 'string', default: '1000' },
    record: { type: 'boolean', default: false },
    // keep the database (its URL printed) for profiling the stages by hand
    keep: { type: 'boolean', default: false },
  },
});
const SIZES = args.paths.split(',').map(Number).sort((a, b) => a - b);
const INCREMENT = Number(args.increment);
const CREATIVES = Number(args.creatives);
const CAMPAIGNS = 20;
const DAY = 86_400_000;
const log = (line: string) => process.stdout.write(`${line}\n`);

// a seeded generator, so that runs compare
let seed = 12345;
const random = () => {
  seed = (seed * 1103515245 + 12345) % 2147483648;
  return seed / 2147483648;
};

// the floor: the same touches, grouped into ordered paths per user, at its fastest settings
const BARE_PATHS = `
  select count(*), sum(array_length(p.path, 1)) from (
    select e.user_key, array_agg(e.creative_id order by e.occurred_at, e.event_id) as path
    from events e
    where e.org_id = $1 and e.type in ('impression', 'click') and e.user_key is not null
      and not coalesce((e.context ->> 'bot')::boolean, false)
    group by e.user_key
  ) p`;

interface Row {
  paths: number;
  touches: number;
  bare: number;
  full: number;
  fullResult: Record<string, unknown>;
  step: number;
  stepResult: Record<string, unknown>;
  campaign: number;
  creative: number;
}

async function main() {
  const bench = await createBenchDatabase('precise_bench_attribution', 2);
  const db = bench.db;
  const end = Math.floor(Date.now() / DAY) * DAY - DAY;
  try {
    const today = new Date(end + DAY).toISOString().slice(0, 10);
    await db.query(`select private.ensure_event_partitions($1::date - 40, $1::date + 1)`, [today]);
    const org = await createOrganization(db, { name: 'Attribution bench' });
    const campaigns: string[] = [];
    for (let i = 0; i < CAMPAIGNS; i += 1) {
      const { rows } = await db.query<{ id: string }>(`insert into campaigns (org_id, name) values ($1, $2) returning id`, [org.id, `c${i}`]);
      campaigns.push(rows[0]!.id);
    }
    log(`machine: ${os.cpus().length} cores, ${Math.round(os.totalmem() / 2 ** 30)} GiB; Postgres on the same machine`);
    const rows: Row[] = [];
    let users = 0;
    let touches = 0;
    for (const size of SIZES) {
      // up to `size` converting and `size` non-converting users
      touches += await load(bench.url, org.id, campaigns, users, 2 * size - users, end, false);
      users = 2 * size;
      await settle(db);
      await db.query('analyze');

      const bare = await time(() => ceiling(db, BARE_PATHS, [org.id]));
      log(`(a) ${size} + ${size} paths, ${touches} touches: bare SQL grouping into paths ${seconds(bare.ms)}`);
      await forget(db);
      const full = await time(() => runAttribution(db));
      log(`(b) full build: ${seconds(full.ms)} ${JSON.stringify(full.result)}`);

      touches += await load(bench.url, org.id, campaigns, 10_000_000 + users, INCREMENT, end, true);
      await settle(db);
      const step = await time(() => runAttribution(db));
      log(`(c) incremental step, ${INCREMENT} new conversions: ${seconds(step.ms)} ${JSON.stringify(step.result)}`);

      const reader = sqlAttributionReader(db);
      const answers: number[] = [];
      for (const dimension of ['campaign', 'creative'] as const) {
        const query = { orgId: org.id, models: [...MODELS], dimension, from: new Date(end - 30 * DAY).toISOString(), to: new Date(end + DAY).toISOString() };
        const answer = await time(() => queryAttribution(reader, models, query));
        answers.push(answer.ms);
        log(`(d) all seven models at ${dimension}: ${seconds(answer.ms)} (${answer.result.data.length} rows, ${JSON.stringify(answer.result.meta.paths)})`);
      }
      rows.push({ paths: size, touches, bare: bare.ms, full: full.ms, fullResult: full.result, step: step.ms, stepResult: step.result, campaign: answers[0]!, creative: answers[1]! });
    }
    await report(rows);
  } finally {
    if (args.keep) {
      log(`kept: ${bench.url}`);
      await bench.close();
    } else {
      await bench.drop();
    }
  }
}

/** Loads `count` users from number `first` by COPY (every other one converting, or all); returns the touches. */
async function load(url: string, orgId: string, campaigns: string[], first: number, count: number, end: number, allConvert: boolean) {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  let touches = 0;
  const received = new Date().toISOString();
  function* lines() {
    for (let u = first; u < first + count; u += 1) {
      const converts = allConvert || u % 2 === 0;
      const at = end - Math.floor(random() * 30 * DAY);
      const n = 2 + Math.floor(random() * 5);
      let chunk = '';
      for (let t = 0; t < n; t += 1) {
        const creative = Math.floor(random() * CREATIVES);
        const click = random() < 0.3;
        const touchAt = new Date(at - 1000 - Math.floor(random() * (click ? 7 : 1) * DAY)).toISOString();
        chunk += `${orgId}\tt${u}-${t}\t${click ? 'click' : 'impression'}\t${touchAt}\t${received}\t${campaigns[creative % campaigns.length]}\tcrv-${creative}\tu${u}\t\\N\t\\N\t{"channel": "${click ? 'search' : 'display'}"}\t{"bot": false}\n`;
      }
      touches += n;
      if (converts) {
        const value = (Math.round(random() * 10_000) / 100).toFixed(2);
        chunk += `${orgId}\torder-${u}\tconversion\t${new Date(at).toISOString()}\t${received}\t\\N\t\\N\tu${u}\t${value}\t${random() < 0.8 ? 'EUR' : 'USD'}\t{}\t{}\n`;
      }
      if (u % 50_000 === 0) process.stdout.write(`\rloading users: ${(u - first).toLocaleString('en-US')} / ${count.toLocaleString('en-US')}`);
      yield chunk;
    }
  }
  await pipeline(
    Readable.from(lines()),
    client.query(copyFrom('copy events (org_id, event_id, type, occurred_at, received_at, campaign_id, creative_id, user_key, value, currency, properties, context) from stdin')),
  );
  process.stdout.write('\n');
  await client.end();
  return touches;
}

/** A full build from nothing: no touches, paths, credits or watermark. */
async function forget(db: Queryable) {
  await db.query('truncate attribution_touches, attribution_paths, metric_points, metric_series');
  await db.query(`update rollup_state set watermark = '0' where name = 'attribution'`);
  await db.query('checkpoint');
}

/** The floor at its fastest: no JIT (as the job runs) and 128 MB to sort and hash in. */
function ceiling(db: Database, sql: string, params: unknown[]) {
  return db.transaction(async (tx) => {
    await tx.query('set local jit = off');
    await tx.query(`set local work_mem = '128MB'`);
    return tx.query(sql, params);
  });
}

/**
 * Waits until no transaction older than the writes runs on the server (xids are the cluster's:
 * a long transaction in another database holds every watermark back), so that the step timed
 * next finds the whole history below its watermark.
 */
async function settle(db: Queryable) {
  const { rows } = await db.query<{ last: string }>('select max(ingest_xid)::text as last from events');
  for (let waited = 0; ; waited += 1) {
    const { rows: now } = await db.query<{ passed: boolean }>('select pg_snapshot_xmin(pg_current_snapshot()) > $1::xid8 as passed', [rows[0]!.last]);
    if (now[0]!.passed) return;
    if (waited === 0) log('waiting for an older transaction on the server to end…');
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
}

async function report(rows: Row[]) {
  const ratio = (a: number, b: number) => `${(a / b).toFixed(2)}×`;
  const verdict = (met: boolean) => (met ? 'met' : 'MISSED');
  const n = (x: number) => x.toLocaleString('en-US');
  const smallest = rows[0]!;
  const largest = rows[rows.length - 1]!;
  const lines = [
    `### ${new Date().toISOString().slice(0, 10)}: attribution, ${os.cpus().length} cores, Postgres on the same machine`,
    '',
    `Loaded by COPY: N converting and N non-converting users of 2 to 6 touches (30 % clicks within 7 days, views within 1 day), ${CAMPAIGNS} campaigns, ${n(CREATIVES)} creatives, conversions over 30 days; (c) adds ${n(INCREMENT)} converting users.`,
    '',
    '| paths | touches | (a) bare paths | (b) full build | b / a | (c) step | (d) campaign | d / a | (d) creative | d / a | credit points |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
    ...rows.map((r) =>
      `| ${n(r.paths)} + ${n(r.paths)} | ${n(r.touches)} | ${seconds(r.bare)} | ${seconds(r.full)} | ${ratio(r.full, r.bare)} | ${seconds(r.step)} | ${seconds(r.campaign)} | ${ratio(r.campaign, r.bare)} | ${seconds(r.creative)} | ${ratio(r.creative, r.bare)} | ${n(Number(r.fullResult.points))} |`,
    ),
    '',
    `- (b) full build / (a) (target ≤ 3): ${rows.map((r) => `${ratio(r.full, r.bare)} ${verdict(r.full <= 3 * r.bare)}`).join(', ')}; of it, paths built ${rows.map((r) => seconds(Number(r.fullResult.build_ms))).join(', ')}, credits written ${rows.map((r) => seconds(Number(r.fullResult.credit_ms))).join(', ')}, the rest the step (touches and conversions folded in)`,
    `- (c) step on ${n(largest.paths)} / on ${n(smallest.paths)} (target ≤ 1.5): ${ratio(largest.step, smallest.step)} ${verdict(largest.step <= 1.5 * smallest.step)}`,
    `- (d) / (a) (target < 2): ${rows.map((r) => `campaign ${ratio(r.campaign, r.bare)} ${verdict(r.campaign < 2 * r.bare)}, creative ${ratio(r.creative, r.bare)} ${verdict(r.creative < 2 * r.bare)}`).join('; ')}`,
    '',
  ];
  await publishReport(lines, args.record, '## Attribution (`npm run bench:attribution -- --record`)\n\n');
}

const seconds = (ms: number) => `${(ms / 1000).toFixed(2)} s`;

async function time<T>(fn: () => Promise<T>): Promise<{ ms: number; result: T }> {
  const started = performance.now();
  const result = await fn();
  return { ms: Math.round(performance.now() - started), result };
}

await main();
