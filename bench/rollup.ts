/**
 * Rollup benchmark (not a test): measures and prints, beside a ceiling measured in the same run.
 *   npm run bench:rollup [-- --history 1000000,5000000 --increment 100000 --record]
 * On the local Postgres (BENCH_DATABASE_URL / DATABASE_URL, default postgres://postgres@127.0.0.1:5432/postgres),
 * in a fresh database dropped after. Events of realistic shape: 40 campaigns, 400 creatives,
 * 30 days, 5 countries, 3 device types, 10 % clicks, 1 % conversions, 3 % bots.
 *   - full rollup of H events (events/s), beside two bare GROUP BYs that write nothing: one at
 *     the finest grain, one over the keys the rollup writes (target: within 2×);
 *   - one incremental step folding in 100k new events on top of each history (target: the step
 *     on the largest history within 1.5× of the step on the smallest: cost follows new data).
 */
import os from 'node:os';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { publishReport } from './report.ts';
import { createOrganization } from '../core/admin.ts';
import { migrate } from '../core/db/migrate.ts';
import { openPostgres } from '../core/db/postgres.ts';

const { values: args } = parseArgs({
  options: {
    history: { type: 'string', default: '1000000,5000000' },
    increment: { type: 'string', default: '100000' },
    record: { type: 'boolean', default: false },
  },
});
const HISTORIES = args.history.split(',').map(Number).sort((a, b) => a - b);
const INCREMENT = Number(args.increment);

const serverUrl = new URL(process.env.BENCH_DATABASE_URL ?? process.env.DATABASE_URL ?? 'postgres://postgres:postgres@127.0.0.1:5432/postgres');
const dbName = `precise_bench_rollup_${Date.now().toString(36)}`;
const dbUrl = new URL(serverUrl.toString());
dbUrl.pathname = `/${dbName}`;
const log = (line: string) => process.stdout.write(`${line}\n`);

// One SQL statement generates a slice of events; `days_back` spreads them over the last 30 days.
const GENERATE = `
  insert into events (org_id, event_id, type, occurred_at, received_at, campaign_id, creative_id, user_key,
                      value, currency, status, click_id, properties, context)
  select $1::uuid, 'bench-' || $2::bigint + g,
         case when g % 100 = 0 then 'conversion' when g % 10 = 0 then 'click' else 'impression' end,
         now() - (random() * $3::float8 * interval '1 day'), now(),
         ('00000000-0000-4000-8000-' || lpad((g % 40)::text, 12, '0'))::uuid,
         'crv-' || (g % 400),
         'u-' || (g % 50000),
         case when g % 100 = 0 then 25 end, case when g % 100 = 0 then 'USD' end,
         case when g % 100 = 0 then 'approved' end,
         case when g % 100 = 0 then 'clk-' || ($2::bigint + g) end,
         '{}'::jsonb,
         jsonb_build_object(
           'source', 'bench',
           'bot', g % 33 = 0,
           'geo', jsonb_build_object('country', (array['US','DE','IN','NP','BR'])[1 + g % 5]),
           'device', jsonb_build_object('type', (array['mobile','desktop','tablet'])[1 + g % 3]))
  from generate_series(1, $4::bigint) as g`;

// The ceilings: aggregations that write nothing, at their fastest settings. The first groups at the finest grain only (one
// level, as the events come); the second over the keys the rollup writes: every metric per
// organization, campaign and creative, with country and device type (the bench's events carry no
// data assets), so it produces as many groups as the rollup writes points.
const BARE_GROUP_BY = `
  select count(*) from (
    select e.org_id, date_bin('15 minutes', e.occurred_at, timestamptz '2000-01-01 00:00:00+00') as bucket,
           e.campaign_id, e.creative_id, e.type, e.context -> 'geo' ->> 'country', e.context -> 'device' ->> 'type',
           count(*), sum(e.value)
    from events e
    group by 1, 2, 3, 4, 5, 6, 7
  ) grouped`;

const BARE_GROUP_BY_ROLLUP_KEYS = `
  select count(*) from (
    select e.org_id, date_bin('15 minutes', e.occurred_at, timestamptz '2000-01-01 00:00:00+00') as bucket,
           e.type || case when (e.context ->> 'bot')::boolean then '_bot' else '' end as metric,
           e.context -> 'geo' ->> 'country' as country, e.context -> 'device' ->> 'type' as device_type,
           e.campaign_id, e.creative_id, count(*), sum(e.value)
    from events e
    group by grouping sets ((1, 2, 3, 4, 5), (1, 2, 3, 4, 5, 6), (1, 2, 3, 4, 5, 7))
  ) grouped`;

async function timed<T>(fn: () => Promise<T>): Promise<{ ms: number; value: T }> {
  const started = performance.now();
  const value = await fn();
  return { ms: performance.now() - started, value };
}

async function main() {
  const admin = new pg.Client({ connectionString: serverUrl.toString() });
  await admin.connect();
  await admin.query(`create database ${dbName}`);
  const db = openPostgres({ connectionString: dbUrl.toString(), max: 2 });
  const rows: string[] = [];
  const increments: Array<{ history: number; ms: number }> = [];
  try {
    await migrate(db);
    await db.query(`select private.ensure_event_partitions((now() at time zone 'UTC')::date - 31, (now() at time zone 'UTC')::date + 1)`);
    const orgId = (await createOrganization(db, { name: 'Bench Rollup Co' })).id;
    log(`machine: ${os.cpus().length} cores, ${Math.round(os.totalmem() / 2 ** 30)} GiB; Postgres on the same machine\n`);

    let loaded = 0;
    for (const history of HISTORIES) {
      // load up to this history, in slices, with progress
      while (loaded < history) {
        const slice = Math.min(250_000, history - loaded);
        await db.query(GENERATE, [orgId, loaded, 30, slice]);
        loaded += slice;
        process.stdout.write(`\rloading events: ${loaded.toLocaleString('en-US')} / ${history.toLocaleString('en-US')}`);
      }
      process.stdout.write('\n');
      await db.query('analyze events');

      // the ceilings at their fastest: no JIT (as the rollup runs) and 128 MB to sort and hash in
      // (the rollup keeps the server's work_mem: the same run with 128 MB was no faster)
      const ceiling = <T extends object>(sql: string) =>
        timed(() =>
          db.transaction(async (tx) => {
            await tx.query(`set local jit = off`);
            await tx.query(`set local work_mem = '128MB'`);
            return tx.query<T>(sql);
          }),
        );
      const bare = await ceiling(BARE_GROUP_BY);
      const bareKeys = await ceiling<{ count: string }>(BARE_GROUP_BY_ROLLUP_KEYS);
      // a full rollup from nothing: forget the metrics, the conversions' state and the watermark
      await db.query('truncate metric_points, metric_series, rollup_conversions');
      await db.query(`update rollup_state set watermark = '0'`);
      await db.query('checkpoint');
      const full = await timed(() => db.query<{ result: { events: number; rows: number } }>('select private.rollup_metrics() as result'));
      const result = full.value.rows[0]!.result;
      const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
      rows.push(
        `| full rollup, ${history.toLocaleString('en-US')} events | ${seconds(full.ms)} | ${Math.round(history / (full.ms / 1000)).toLocaleString('en-US')} | ${seconds(bare.ms)} | ${(full.ms / bare.ms).toFixed(2)}× | ${seconds(bareKeys.ms)} (${Number(bareKeys.value.rows[0]!.count).toLocaleString('en-US')} groups) | ${(full.ms / bareKeys.ms).toFixed(2)}× | ${result.rows.toLocaleString('en-US')} |`,
      );
      log(`full rollup of ${history}: ${seconds(full.ms)} (bare GROUP BY ${seconds(bare.ms)}, over the rollup's keys ${seconds(bareKeys.ms)})`);

      // one incremental step: 100k new events of the last day on top of this history
      await db.query(GENERATE, [orgId, 10_000_000_000 + history, 1, INCREMENT]);
      const step = await timed(() => db.query<{ result: { events: number; buckets: number } }>('select private.rollup_metrics() as result'));
      const stepResult = step.value.rows[0]!.result;
      increments.push({ history, ms: step.ms });
      rows.push(
        `| incremental step: ${INCREMENT.toLocaleString('en-US')} new on ${history.toLocaleString('en-US')} | ${(step.ms / 1000).toFixed(2)} s | ${Math.round(INCREMENT / (step.ms / 1000)).toLocaleString('en-US')} | | | | | ${stepResult.buckets} buckets |`,
      );
      log(`incremental step on ${history}: ${(step.ms / 1000).toFixed(2)} s (${stepResult.events} events, ${stepResult.buckets} buckets)`);
      loaded += INCREMENT;
    }

    const fullRatios = (column: number) =>
      rows.filter((r) => r.startsWith('| full')).map((r) => r.split('|')[column]!.trim()).join(', ');
    const smallest = increments[0]!;
    const largest = increments[increments.length - 1]!;
    await publishReport([
      `### ${new Date().toISOString().slice(0, 10)}: rollup, ${os.cpus().length} cores, Postgres on the same machine`,
      '',
      '| run | time | events/s | bare GROUP BY, finest grain | rollup / it | bare GROUP BY over the rollup\'s keys | rollup / it | points written |',
      '|---|---:|---:|---:|---:|---:|---:|---:|',
      ...rows,
      '',
      `- full rollup / bare GROUP BY at the finest grain (target ≤ 2): ${fullRatios(5)}`,
      `- full rollup / bare GROUP BY over the rollup's keys (target ≤ 2): ${fullRatios(7)}`,
      `- incremental step on ${largest.history.toLocaleString('en-US')} / on ${smallest.history.toLocaleString('en-US')} = ${(largest.ms / smallest.ms).toFixed(2)} (target ≤ 1.5) ${largest.ms / smallest.ms <= 1.5 ? 'met' : 'MISSED'}`,
      '',
    ], args.record, '## Rollup (`npm run bench:rollup -- --record`)\n\n');
  } finally {
    await db.close();
    await admin.query(`drop database if exists ${dbName} with (force)`);
    await admin.end();
  }
}

await main();
