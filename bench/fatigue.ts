/**
 * Creative-fatigue benchmark (issue 13; not a test): measures and prints, beside a floor measured
 * in the same run.
 *   npm run bench:fatigue [-- --campaigns 100 --creatives 100 --days 30 --buckets 24 --record]
 * On the local Postgres (BENCH_DATABASE_URL / DATABASE_URL), in a fresh database dropped after
 * (--keep leaves it, its URL printed).
 *
 * The data: --campaigns campaigns of --creatives creatives, --days UTC days ending yesterday.
 * Each creative shows 300 to 5,000 impressions a day (log-uniform; weekends × 0.8, ±15 % a day)
 * at a CTR of 1 to 3 %, clicks Poisson; a day's traffic falls in --buckets of the 96 15-minute
 * buckets, each bucket in one of the creative's four country × device splits. 10 % of the
 * creatives fatigue (their CTR declines to 50-65 % over 5 days, starting on day 12 to 20); in
 * the first campaign every creative's CTR drops by 40 % for the last 7 days (a market-wide dip).
 *
 * Loaded as the rollup would have written it, by COPY: metric_series and metric_points
 * (impressions and clicks, granularity '15m', dimensions {country, device_type}, per creative,
 * campaign and organization, one point per series and bucket with traffic, in bucket order as
 * the rollup's steps append them). Events at that volume (some 16 M impressions a day) cannot be
 * loaded and rolled up here. The event log holds what the job reads of it: one impression per
 * creative and day (its campaign membership), already counted in the points (the rollup's
 * watermark is moved past them). The last hour of the last day is held back and arrives for (c) as events, folded
 * in by the rollup itself; the run checks that the rollup then adds no series the load did not
 * write (same metric names, entities and dimensions).
 *
 *   (a) the floor: a bare SQL query reading the creatives' impressions and clicks points, summed
 *       per creative and UTC day (no JIT, 128 MB of work_mem, ids grouped under "C");
 *   (b) the job's full run from nothing (runCreativeFatigue: the membership step, then every
 *       campaign scored over every day); target ≤ 3 × a;
 *   (c) the hourly step after the held-back hour lands on the last day: target, only that day
 *       re-scored and rewritten (rows written counted by their transaction, with their days);
 *       and a rerun with nothing new.
 */
import os from 'node:os';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { from as copyFrom } from 'pg-copy-streams';
import { createOrganization } from '../core/admin.ts';
import type { Database, Queryable, QueryResult } from '../core/db/port.ts';
import { alarmThreshold, DEFAULT_FATIGUE_SETTINGS } from '../scheduled/fatigue/detector.ts';
import { runCreativeFatigue } from '../scheduled/jobs/creative-fatigue.ts';
import { createBenchDatabase } from './bench-database.ts';
import { publishReport } from './report.ts';

const { values: args } = parseArgs({
  options: {
    campaigns: { type: 'string', default: '100' },
    creatives: { type: 'string', default: '100' },
    days: { type: 'string', default: '30' },
    buckets: { type: 'string', default: '24' },
    record: { type: 'boolean', default: false },
    keep: { type: 'boolean', default: false },
  },
});
const CAMPAIGNS = Number(args.campaigns);
const PER_CAMPAIGN = Number(args.creatives);
const CREATIVES = CAMPAIGNS * PER_CAMPAIGN;
const DAYS = Number(args.days);
const BUCKETS = Math.min(96, Number(args.buckets));
/** the last day's buckets from this one on arrive late, for (c) */
const LATE_FROM = 92;
const DAY = 86_400_000;
const BUCKET = 900_000;
const COUNTRIES = ['US', 'DE', 'FR', 'BR', 'IN'];
const DEVICES = ['mobile', 'desktop'];
/** a series' place: (entity, country × device split, metric); entities are creatives, then campaigns, then the organization */
const SPLITS = COUNTRIES.length * DEVICES.length;
const slot = (entity: number, split: number, metric: number) => (entity * SPLITS + split) * 2 + metric;
const SLOTS = slot(CREATIVES + CAMPAIGNS + 1, 0, 0);
const METRICS = ['impressions', 'clicks'];
const log = (line: string) => process.stdout.write(`${line}\n`);

// the floor: the same points, summed per creative and UTC day, at its fastest settings (ids
// grouped under the "C" collation, as the job does: about 10 % faster)
const BARE_DAILY = `
  select count(*) as days, sum(x.impressions) as impressions, sum(x.clicks) as clicks from (
    select s.entity_id collate "C", (p.bucket_start at time zone 'UTC')::date as day,
           sum(p.value) filter (where s.metric = 'impressions') as impressions,
           sum(p.value) filter (where s.metric = 'clicks') as clicks
    from metric_series s
    join metric_points p on p.org_id = s.org_id and p.series_id = s.id
    where s.org_id = $1 and s.entity_type = 'creative' and s.granularity = '15m' and s.metric in ('impressions', 'clicks')
      and p.bucket_start < $2
    group by 1, 2
  ) x`;

/** mulberry32, seeded so that runs compare */
function generator(seed: number) {
  let state = seed >>> 0;
  const uniform = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const gaussian = () => Math.sqrt(-2 * Math.log(1 - uniform())) * Math.cos(2 * Math.PI * uniform());
  const poisson = (mean: number) => {
    if (mean >= 30) return Math.max(0, Math.round(mean + Math.sqrt(mean) * gaussian()));
    let k = 0;
    for (let p = uniform(), limit = Math.exp(-mean); p > limit; p *= uniform()) k += 1;
    return k;
  };
  return { uniform, poisson };
}

interface Creative {
  campaign: number;
  id: string;
  volume: number;
  ctr: number;
  /** global split numbers and their cumulative weights */
  splits: number[];
  weights: number[];
  /** CTR multiplier per day index */
  trend: (day: number) => number;
}

function creatives(): Creative[] {
  const { uniform } = generator(13);
  const all: Creative[] = [];
  for (let c = 0; c < CAMPAIGNS; c += 1) {
    for (let k = 0; k < PER_CAMPAIGN; k += 1) {
      const first = Math.floor(uniform() * COUNTRIES.length);
      const second = (first + 1 + Math.floor(uniform() * (COUNTRIES.length - 1))) % COUNTRIES.length;
      const splits = [first, second].flatMap((country) => DEVICES.map((_, device) => country * DEVICES.length + device));
      let total = 0;
      const weights = splits.map(() => (total += 0.2 + uniform()));
      const fatigues = c > 0 && uniform() < 0.1;
      const start = 12 + Math.floor(uniform() * 9);
      const floor = 0.5 + uniform() * 0.15;
      const trend = c === 0
        ? (day: number) => (day >= DAYS - 7 ? 0.6 : 1)
        : fatigues
          ? (day: number) => (day < start ? 1 : 1 - (1 - floor) * Math.min(1, (day - start + 1) / 5))
          : () => 1;
      all.push({
        campaign: c,
        id: `c${c}-crv-${k}`,
        volume: 300 * (5000 / 300) ** uniform(),
        ctr: 0.01 + 0.02 * uniform(),
        splits,
        weights: weights.map((w) => w / total),
        trend,
      });
    }
  }
  return all;
}

/** One day's points: parallel arrays of slot, bucket and value. */
interface DayPoints {
  slots: number[];
  buckets: number[];
  values: number[];
}
/** The membership events of a day: a creative's first impression bucket and its split. */
interface Walk {
  member: Array<{ creative: number; split: number; bucket: number }>;
}
const noPoints = (): DayPoints => ({ slots: [], buckets: [], values: [] });

/**
 * The plan day by day (the same every time: seeded): each day's points of creatives, campaigns
 * and the organization, and its membership events. The last day's buckets from LATE_FROM on are
 * held back into `late` (creatives only: the rollup sums them up itself).
 */
function* walk(all: Creative[], late: DayPoints): Generator<{ day: number; points: DayPoints; member: Walk['member'] }> {
  const { uniform, poisson } = generator(29);
  const order = Array.from({ length: 96 }, (_, i) => i);
  const campaignSums = new Float64Array(CAMPAIGNS * SPLITS * 2 * 96);
  const orgSums = new Float64Array(SPLITS * 2 * 96);
  for (let day = 0; day < DAYS; day += 1) {
    const points: DayPoints = { slots: [], buckets: [], values: [] };
    const member: Walk['member'] = [];
    campaignSums.fill(0);
    orgSums.fill(0);
    const weekday = new Date(dayStart(day)).getUTCDay();
    for (let i = 0; i < all.length; i += 1) {
      const creative = all[i]!;
      const impressions = Math.round(creative.volume * (weekday === 0 || weekday === 6 ? 0.8 : 1) * (0.85 + 0.3 * uniform()));
      const clicks = poisson(impressions * creative.ctr * creative.trend(day));
      const k = Math.min(BUCKETS, impressions);
      // k distinct buckets (a partial shuffle), weights, and a split per bucket
      const weights: number[] = [];
      const splits: number[] = [];
      let total = 0;
      for (let j = 0; j < k; j += 1) {
        const swap = j + Math.floor(uniform() * (96 - j));
        [order[j], order[swap]] = [order[swap]!, order[j]!];
        weights.push((total += 0.5 + uniform()));
        const pick = uniform();
        splits.push(creative.splits[creative.weights.findIndex((w) => pick < w)] ?? creative.splits[3]!);
      }
      const counts = [new Array<number>(k).fill(0), new Array<number>(k).fill(0)];
      let given = 0;
      for (let j = 0; j < k; j += 1) {
        counts[0]![j] = Math.floor((impressions * (weights[j]! - (weights[j - 1] ?? 0))) / total);
        given += counts[0]![j]!;
      }
      for (let j = 0; given < impressions; j += 1, given += 1) counts[0]![j % k]! += 1;
      for (let c = 0; c < clicks; c += 1) counts[1]![Math.floor(uniform() * k)]! += 1;
      let first = -1;
      for (let j = 0; j < k; j += 1) {
        const bucket = order[j]!;
        for (let metric = 0; metric < 2; metric += 1) {
          const value = counts[metric]![j]!;
          if (value === 0) continue;
          const target = day === DAYS - 1 && bucket >= LATE_FROM ? late : points;
          target.slots.push(slot(i, splits[j]!, metric));
          target.buckets.push(bucket);
          target.values.push(value);
          if (target === late) continue;
          campaignSums[((creative.campaign * SPLITS + splits[j]!) * 2 + metric) * 96 + bucket]! += value;
          orgSums[(splits[j]! * 2 + metric) * 96 + bucket]! += value;
          if (metric === 0 && (first < 0 || bucket < order[first]!)) first = j;
        }
      }
      if (first >= 0) member.push({ creative: i, split: splits[first]!, bucket: order[first]! });
    }
    for (let at = 0; at < campaignSums.length; at += 1) {
      if (campaignSums[at] === 0) continue;
      const bucket = at % 96;
      const series = (at - bucket) / 96;
      points.slots.push(CREATIVES * SPLITS * 2 + series);
      points.buckets.push(bucket);
      points.values.push(campaignSums[at]!);
    }
    for (let at = 0; at < orgSums.length; at += 1) {
      if (orgSums[at] === 0) continue;
      const bucket = at % 96;
      points.slots.push((CREATIVES + CAMPAIGNS) * SPLITS * 2 + (at - bucket) / 96);
      points.buckets.push(bucket);
      points.values.push(orgSums[at]!);
    }
    yield { day, points, member };
  }
}

let today = 0;
const dayStart = (day: number) => today - (DAYS - day) * DAY;
const iso = (ms: number) => new Date(ms).toISOString();

/** What a slot names: entity type and id, metric, dimensions (as the rollup spells them). */
function describeSlot(at: number, all: Creative[], orgId: string, campaignIds: string[]) {
  const metric = at % 2;
  const split = ((at - metric) / 2) % SPLITS;
  const entity = ((at - metric) / 2 - split) / SPLITS;
  const [entityType, entityId] = entity < CREATIVES
    ? ['creative', all[entity]!.id]
    : entity < CREATIVES + CAMPAIGNS ? ['campaign', campaignIds[entity - CREATIVES]!] : ['organization', orgId];
  const country = COUNTRIES[Math.floor(split / DEVICES.length)]!;
  const device = DEVICES[split % DEVICES.length]!;
  return { entityType, entityId, metric: METRICS[metric]!, country, device };
}

async function copy(url: string, sql: string, lines: Iterable<string>) {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await pipeline(Readable.from(lines), client.query(copyFrom(sql)));
  } finally {
    await client.end();
  }
}

/** Loads the plan: series, points in bucket order, the membership events. Returns the late hour and the series ids. */
async function load(url: string, db: Queryable, orgId: string, campaignIds: string[], all: Creative[]) {
  // first pass: which series have points (the rollup names only those)
  const used = new Uint8Array(SLOTS);
  for (const { points } of walk(all, noPoints())) {
    for (const at of points.slots) used[at] = 1;
  }
  await copy(url, 'copy metric_series (org_id, metric, entity_type, entity_id, granularity, dimensions) from stdin', (function* () {
    for (let at = 0; at < SLOTS; at += 1) {
      if (!used[at]) continue;
      const s = describeSlot(at, all, orgId, campaignIds);
      yield `${orgId}\t${s.metric}\t${s.entityType}\t${s.entityId}\t15m\t{"country": "${s.country}", "device_type": "${s.device}"}\n`;
    }
  })());
  const { rows } = await db.query<{ id: string; entity_type: string; entity_id: string; metric: string; country: string; device: string }>(
    `select id, entity_type, entity_id, metric, dimensions ->> 'country' as country, dimensions ->> 'device_type' as device
     from metric_series where org_id = $1`,
    [orgId],
  );
  const ids = new Map(rows.map((r) => [`${r.entity_type}|${r.entity_id}|${r.metric}|${r.country}|${r.device}`, Number(r.id)]));
  const seriesId = new Int32Array(SLOTS);
  for (let at = 0; at < SLOTS; at += 1) {
    if (!used[at]) continue;
    const s = describeSlot(at, all, orgId, campaignIds);
    seriesId[at] = ids.get(`${s.entityType}|${s.entityId}|${s.metric}|${s.country}|${s.device}`)!;
  }

  // second pass: the points of each day in (bucket, series) order, as the rollup's steps append them
  const members: Array<Walk['member']> = [];
  const late = noPoints();
  let points = 0;
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await pipeline(
      Readable.from((function* () {
        for (const { day, points: { slots, buckets, values }, member } of walk(all, late)) {
          members.push(member);
          // (bucket, series id, index) in one float: 96 × 2^20 × 2^24 < 2^53
          const keys = new Float64Array(slots.length);
          for (let i = 0; i < slots.length; i += 1) keys[i] = (buckets[i]! * 2 ** 20 + seriesId[slots[i]!]!) * 2 ** 24 + i;
          keys.sort();
          let chunk = '';
          for (const key of keys) {
            const i = key % 2 ** 24;
            chunk += `${orgId}\t${seriesId[slots[i]!]}\t${iso(dayStart(day) + buckets[i]! * BUCKET)}\t${values[i]}\n`;
            if (chunk.length > 65_536) {
              yield chunk;
              chunk = '';
            }
          }
          yield chunk;
          points += slots.length;
          process.stdout.write(`\rloading points: day ${day + 1} / ${DAYS}, ${points.toLocaleString('en-US')} points`);
        }
      })()),
      client.query(copyFrom('copy metric_points (org_id, series_id, bucket_start, value) from stdin')),
    );
  } finally {
    await client.end();
  }
  process.stdout.write('\n');
  await copy(url, 'copy events (org_id, event_id, type, occurred_at, campaign_id, creative_id, context) from stdin', (function* () {
    for (let day = 0; day < DAYS; day += 1) {
      for (const m of members[day]!) {
        yield eventLine(orgId, `member-${day}-${m.creative}`, 'impression', dayStart(day) + m.bucket * BUCKET, campaignIds, all[m.creative]!, m.split);
      }
    }
  })());
  return { late, points, members: members.reduce((sum, m) => sum + m.length, 0), used };
}

function eventLine(orgId: string, eventId: string, type: string, at: number, campaignIds: string[], creative: Creative, split: number) {
  const country = COUNTRIES[Math.floor(split / DEVICES.length)]!;
  const device = DEVICES[split % DEVICES.length]!;
  return `${orgId}\t${eventId}\t${type}\t${iso(at)}\t${campaignIds[creative.campaign]}\t${creative.id}\t{"bot": false, "geo": {"country": "${country}"}, "device": {"type": "${device}"}}\n`;
}

/** The series the late hour's points need that the load did not name (the rollup adds them). */
function unnamed(late: DayPoints, used: Uint8Array, all: Creative[]) {
  const missing = new Set<number>();
  for (const at of late.slots) {
    const metric = at % 2;
    const split = ((at - metric) / 2) % SPLITS;
    const creative = ((at - metric) / 2 - split) / SPLITS;
    for (const s of [at, slot(CREATIVES + all[creative]!.campaign, split, metric), slot(CREATIVES + CAMPAIGNS, split, metric)]) {
      if (!used[s]) missing.add(s);
    }
  }
  return missing.size;
}

/** The held-back hour as events (one per impression and click), spread over their buckets. */
function* lateEvents(late: DayPoints, orgId: string, campaignIds: string[], all: Creative[]) {
  const { uniform } = generator(41);
  for (let i = 0; i < late.slots.length; i += 1) {
    const at = late.slots[i]!;
    const metric = at % 2;
    const split = ((at - metric) / 2) % SPLITS;
    const creative = ((at - metric) / 2 - split) / SPLITS;
    const bucketStart = dayStart(DAYS - 1) + late.buckets[i]! * BUCKET;
    for (let n = 0; n < late.values[i]!; n += 1) {
      yield eventLine(orgId, `late-${i}-${metric}-${n}`, metric === 0 ? 'impression' : 'click', bucketStart + Math.floor(uniform() * BUCKET), campaignIds, all[creative]!, split);
    }
  }
}

/**
 * The database's share of a run, per SQL function called (calls may overlap: the job steps a
 * campaign while the previous one is written), and the time no call was under way.
 */
function profiled(db: Queryable) {
  const spent = new Map<string, { ms: number; calls: number }>();
  const busy = { active: 0, since: 0, ms: 0 };
  const wrapped: Queryable = {
    async query<Row>(text: string, params?: readonly unknown[]): Promise<QueryResult<Row>> {
      const started = performance.now();
      if (busy.active++ === 0) busy.since = started;
      try {
        return await db.query<Row>(text, params);
      } finally {
        const name = /private\.(\w+)/.exec(text)?.[1] ?? text.slice(0, 30);
        const entry = spent.get(name) ?? { ms: 0, calls: 0 };
        entry.ms += performance.now() - started;
        entry.calls += 1;
        spent.set(name, entry);
        if (--busy.active === 0) busy.ms += performance.now() - busy.since;
      }
    },
  };
  return { db: wrapped, spent, busy };
}

/** Rows of the fatigue stores written from transaction `marker` on, with the days they hold. */
async function writtenSince(db: Queryable, orgId: string, marker: string) {
  const { rows } = await db.query<{ store: string; rows: string; first: string | null; last: string | null }>(
    `with mine as (select $2::bigint as marker)
     select 'fatigue_days' as store, count(*) as rows, min(day)::text as first, max(day)::text as last
       from fatigue_days, mine where org_id = $1 and xmin::text::bigint >= marker
     union all
     select 'fatigue_verdicts', count(*), min(day)::text, max(day)::text
       from fatigue_verdicts, mine where org_id = $1 and xmin::text::bigint >= marker
     union all
     select 'metric_points (scores)', count(*), min(p.bucket_start at time zone 'UTC')::date::text, max(p.bucket_start at time zone 'UTC')::date::text
       from metric_points p join metric_series s on s.org_id = p.org_id and s.id = p.series_id, mine
       where p.org_id = $1 and s.granularity = 'day' and p.xmin::text::bigint >= marker
     union all
     select 'events (transitions)', count(*), min((occurred_at at time zone 'UTC')::date - 1)::text, max((occurred_at at time zone 'UTC')::date - 1)::text
       from events, mine where org_id = $1 and type like 'creative_fatigue_%' and xmin::text::bigint >= marker`,
    [orgId, marker],
  );
  return rows.map((r) => ({ store: r.store, rows: Number(r.rows), first: r.first, last: r.last }));
}

/** The current transaction id, 32-bit (what xmin holds). */
async function marker(db: Queryable) {
  const { rows } = await db.query<{ xid: string }>(`select (pg_current_xact_id()::text::bigint % 4294967296)::text as xid`);
  return rows[0]!.xid;
}

async function main() {
  const bench = await createBenchDatabase('precise_bench_fatigue', 2);
  const db = bench.db;
  today = Math.floor(Date.now() / DAY) * DAY;
  const lastDay = iso(dayStart(DAYS - 1)).slice(0, 10);
  try {
    await db.query(`select private.ensure_event_partitions($1::date - $2::int - 2, $1::date + 1)`, [iso(today).slice(0, 10), DAYS]);
    const org = await createOrganization(db, { name: 'Fatigue bench' });
    const campaignIds: string[] = [];
    for (let c = 0; c < CAMPAIGNS; c += 1) {
      const { rows } = await db.query<{ id: string }>(`insert into campaigns (org_id, name) values ($1, $2) returning id`, [org.id, `c${c}`]);
      campaignIds.push(rows[0]!.id);
    }
    log(`machine: ${os.cpus().length} cores, ${Math.round(os.totalmem() / 2 ** 30)} GiB; Postgres on the same machine`);
    const all = creatives();
    const loadStarted = performance.now();
    const loaded = await load(bench.url, db, org.id, campaignIds, all);
    await db.query('vacuum analyze');
    log(`loaded ${loaded.points.toLocaleString('en-US')} points and ${loaded.members.toLocaleString('en-US')} membership events in ${seconds(performance.now() - loadStarted)}`);
    // the membership events are counted in the points: the rollup's watermark goes past them
    await settle(db);
    await db.query(`update rollup_state set watermark = pg_snapshot_xmin(pg_current_snapshot()) where name = 'metrics_15m'`);

    const before = iso(today);
    const bare = await time(() => ceiling(db, BARE_DAILY, [org.id, before]));
    const floor = bare.result.rows[0]!;
    log(`(a) bare SQL, ${Number(floor.days).toLocaleString('en-US')} creative-days: ${seconds(bare.ms)}`);

    const threshold = await time(async () => alarmThreshold(DEFAULT_FATIGUE_SETTINGS.falseAlarmRate));
    log(`the detector's alarm level, simulated once per process (not in b): ${seconds(threshold.ms)}`);
    const fullProfile = profiled(db);
    const full = await time(() => runCreativeFatigue(fullProfile.db, { through: lastDay }) as Promise<Record<string, unknown>>);
    const mapMs = await mapStepMs(db);
    log(`(b) full run: ${seconds(full.ms)} ${JSON.stringify({ ...full.result, restepped: undefined })}`);
    const stages = stageLines(fullProfile, full.ms);
    for (const line of stages) log(`    ${line}`);
    const check = await db.query<{ impressions: string; clicks: string }>(
      `select sum(impressions) as impressions, sum(clicks) as clicks from fatigue_verdicts where org_id = $1`, [org.id]);
    const statuses = await statusesOn(db, org.id, lastDay);
    log(`    job read ${check.rows[0]!.impressions} impressions and ${check.rows[0]!.clicks} clicks; the floor ${floor.impressions} and ${floor.clicks}`);
    log(`    verdicts on ${lastDay}: ${statuses}`);

    // (c) the held-back hour arrives as events; the rollup folds them in, then the hourly step
    const seriesBefore = await seriesCount(db, org.id);
    const lateLines = [...lateEvents(loaded.late, org.id, campaignIds, all)];
    await copy(bench.url, 'copy events (org_id, event_id, type, occurred_at, campaign_id, creative_id, context) from stdin', lateLines);
    await settle(db);
    const rollup = await time(() => db.query<{ result: Record<string, unknown> }>('select private.rollup_metrics() as result'));
    const newSeries = (await seriesCount(db, org.id)) - seriesBefore;
    const expectedNew = unnamed(loaded.late, loaded.used, all);
    log(`    ${lateLines.length.toLocaleString('en-US')} late events on ${lastDay} rolled up in ${seconds(rollup.ms)}; series the rollup added: ${newSeries} (expected ${expectedNew})`);
    if (newSeries !== expectedNew) throw new Error(`the rollup added ${newSeries} series, not ${expectedNew}: the load does not write what the rollup writes`);
    await settle(db);
    const stepMarker = await marker(db);
    const stepProfile = profiled(db);
    const step = await time(() => runCreativeFatigue(stepProfile.db, { through: lastDay }) as Promise<Record<string, any>>);
    const written = await writtenSince(db, org.id, stepMarker);
    const from = [...new Set((step.result.restepped as Array<{ from: string }>).map((r) => r.from))].sort();
    log(`(c) hourly step: ${seconds(step.ms)} ${JSON.stringify({ ...step.result, restepped: undefined })}; re-stepped from ${from.join(', ')}`);
    const stepStages = stageLines(stepProfile, step.ms);
    for (const line of stepStages) log(`    ${line}`);
    for (const w of written) log(`    wrote ${w.rows.toLocaleString('en-US')} ${w.store} (days ${w.first ?? '-'} … ${w.last ?? '-'})`);
    const again = await time(() => runCreativeFatigue(db, { through: lastDay }) as Promise<Record<string, any>>);
    log(`    rerun with nothing new: ${seconds(again.ms)}, ${again.result.days_stepped} days stepped`);

    const onlyLastDay = from.length === 1 && from[0] === lastDay && Number(step.result.days_stepped) === (step.result.restepped as unknown[]).length
      && written.every((w) => w.rows === 0 || (w.first === lastDay && w.last === lastDay));
    await report({
      loaded, floor, bare: bare.ms, threshold: threshold.ms, full: full.ms, fullResult: full.result, stages, mapMs, statuses,
      late: lateLines.length, rollupMs: rollup.ms, newSeries, step: step.ms, stepResult: step.result, stepStages, written, onlyLastDay, again: again.ms,
      againDays: Number(again.result.days_stepped), lastDay,
    });
  } finally {
    if (args.keep) {
      log(`kept: ${bench.url}`);
      await bench.close();
    } else {
      await bench.drop();
    }
  }
}

async function seriesCount(db: Queryable, orgId: string) {
  const { rows } = await db.query<{ n: string }>(`select count(*) as n from metric_series where org_id = $1 and granularity = '15m'`, [orgId]);
  return Number(rows[0]!.n);
}

async function statusesOn(db: Queryable, orgId: string, day: string) {
  const { rows } = await db.query<{ status: string; n: string }>(
    `select status, count(*) as n from fatigue_verdicts where org_id = $1 and day = $2 group by 1 order by 2 desc`, [orgId, day]);
  return rows.map((r) => `${r.status} ${Number(r.n).toLocaleString('en-US')}`).join(', ');
}

async function mapStepMs(db: Queryable) {
  const { rows } = await db.query<{ ms: number }>(`select last_duration_ms as ms from rollup_state where name = 'creative_fatigue'`);
  return rows[0]!.ms;
}

function stageLines({ spent, busy }: ReturnType<typeof profiled>, total: number) {
  const lines = [...spent].sort((a, b) => b[1].ms - a[1].ms).map(([name, { ms, calls }]) => `${name} ${seconds(ms)} (×${calls})`);
  return [...lines, `no query under way (TypeScript alone: detector, JSON) ${seconds(total - busy.ms)}`];
}

/** The floor at its fastest: no JIT (as the job runs) and 128 MB to sort and hash in. */
function ceiling(db: Database, sql: string, params: unknown[]) {
  return db.transaction(async (tx) => {
    await tx.query('set local jit = off');
    await tx.query(`set local work_mem = '128MB'`);
    return tx.query<{ days: string; impressions: string; clicks: string }>(sql, params);
  });
}

/**
 * Waits until no transaction older than the writes runs on the server (xids are the cluster's:
 * a long transaction in another database holds every watermark back).
 */
async function settle(db: Queryable) {
  const { rows } = await db.query<{ now: string }>('select pg_current_xact_id()::text as now');
  for (let waited = 0; ; waited += 1) {
    const { rows: passed } = await db.query<{ passed: boolean }>('select pg_snapshot_xmin(pg_current_snapshot()) > $1::xid8 as passed', [rows[0]!.now]);
    if (passed[0]!.passed) return;
    if (waited === 0) log('waiting for an older transaction on the server to end…');
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
}

interface Figures {
  loaded: { points: number; members: number };
  floor: { days: string; impressions: string; clicks: string };
  bare: number;
  threshold: number;
  full: number;
  fullResult: Record<string, unknown>;
  stages: string[];
  mapMs: number;
  statuses: string;
  late: number;
  rollupMs: number;
  newSeries: number;
  step: number;
  stepResult: Record<string, any>;
  stepStages: string[];
  written: Array<{ store: string; rows: number; first: string | null; last: string | null }>;
  onlyLastDay: boolean;
  again: number;
  againDays: number;
  lastDay: string;
}

async function report(f: Figures) {
  const ratio = (a: number, b: number) => `${(a / b).toFixed(2)}×`;
  const verdict = (met: boolean) => (met ? 'met' : 'MISSED');
  const n = (x: number | string) => Number(x).toLocaleString('en-US');
  const lines = [
    `### ${new Date().toISOString().slice(0, 10)}: creative fatigue, ${os.cpus().length} cores, Postgres on the same machine`,
    '',
    `Loaded by COPY as the rollup writes it: ${n(CAMPAIGNS)} campaigns × ${n(PER_CAMPAIGN)} creatives × ${DAYS} days, 300-5,000 impressions a creative-day at 1-3 % CTR, in ${BUCKETS} of 96 buckets a day over 4 country × device splits; 10 % fatiguing, one campaign with a 40 % market-wide dip. ${n(f.loaded.points)} points (creative, campaign and organization series), ${n(f.floor.days)} creative-days, ${n(f.floor.impressions)} impressions; ${n(f.loaded.members)} membership events. (c): the last day's last hour, held back, lands as ${n(f.late)} events, rolled up (${seconds(f.rollupMs)}, ${f.newSeries} new series).`,
    '',
    '| (a) bare SQL, daily sums | (b) full run | b / a | (c) hourly step | c / a | days stepped (b; c) | rerun, nothing new |',
    '|---:|---:|---:|---:|---:|---:|---:|',
    `| ${seconds(f.bare)} | ${seconds(f.full)} | ${ratio(f.full, f.bare)} | ${seconds(f.step)} | ${ratio(f.step, f.bare)} | ${n(Number(f.fullResult.days_stepped))}; ${n(f.stepResult.days_stepped)} | ${seconds(f.again)} (${f.againDays} days) |`,
    '',
    `- (b) full run / (a) (target ≤ 3): ${ratio(f.full, f.bare)} ${verdict(f.full <= 3 * f.bare)}; of it: ${f.stages.join('; ')} (the membership step ${seconds(f.mapMs)}; the alarm level's simulation, once per process, ${seconds(f.threshold)} more, not counted)`,
    `- (c) only the changed day touched (target): ${verdict(f.onlyLastDay)}: ${n(f.stepResult.restepped.length)} campaigns re-stepped from ${f.lastDay}, ${n(f.stepResult.days_stepped)} days stepped; written ${f.written.map((w) => `${n(w.rows)} ${w.store}${w.rows ? ` (${w.first === w.last ? w.first : `${w.first} … ${w.last}`})` : ''}`).join(', ')}`,
    `- (c) of it: ${f.stepStages.join('; ')}: every day's counts are read again to find the changed one; a rerun with nothing new costs ${seconds(f.again)}`,
    `- verdicts on ${f.lastDay}: ${f.statuses}`,
    '',
  ];
  await publishReport(lines, args.record, '## Creative fatigue (`npm run bench:fatigue -- --record`)\n\n');
}

const seconds = (ms: number) => `${(ms / 1000).toFixed(2)} s`;

async function time<T>(fn: () => Promise<T>): Promise<{ ms: number; result: T }> {
  const started = performance.now();
  const result = await fn();
  return { ms: Math.round(performance.now() - started), result };
}

await main();
