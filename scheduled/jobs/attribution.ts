import type { Queryable } from '../../core/db/port.ts';
import { bucketOf, CreditPoints, toCreditUnits } from '../attribution/credit-points.ts';
import { RULE_MODELS, ruleCredits, type Touch } from '../attribution/models.ts';
import type { JobDefinition, JobProgress } from '../job.ts';
import { eachDay, rangeOf, rangeResult, type TimeRange } from '../range.ts';

/**
 * Attribution, kept incrementally (supabase/migrations/20261125200000_attribution.sql): one step
 * folds the touches and conversions that arrived since its watermark into the path store and
 * marks the paths they change; the paths are then built in chunks, and the rule models' credits
 * of every changed conversion are written as metrics (`attributed_conversions`,
 * `attributed_value`), the new credit minus what the metrics held, exactly once. With `from`/`to`
 * it rebuilds the paths and credits of the conversions in that range instead, a day at a time.
 */
export interface AttributionInput {
  from?: string;
  to?: string;
}

/**
 * The dimensions whose rule-model credits are stored as metrics: bounded by the campaigns and
 * creatives a path holds. data_asset and property:<name> are computed from the paths when asked.
 */
export const STORED_DIMENSIONS = ['campaign', 'creative'] as const;
type StoredDimension = (typeof STORED_DIMENSIONS)[number];

const BUILD_CHUNK = 10_000;
const CREDIT_CHUNK = 5000;
// a bound on the chunks of one run, far above any real backlog, so that a bug cannot loop forever
const MAX_CHUNKS = 100_000;

/** A touch as a path stores it (private.attribution_touch_json). */
export interface StoredTouch {
  id: string;
  /** epoch milliseconds */
  at: number;
  /** c: click, v: view */
  k: 'c' | 'v';
  cmp?: string;
  crv?: string;
  /** data asset ids, sorted and comma-joined */
  ast?: string;
  p?: Record<string, string | number | boolean>;
}

/** A conversion's state as it is (or was) credited. */
interface CreditState {
  /** the conversion's time as Postgres wrote it (exact), and in epoch ms */
  at: string;
  ms: number;
  status: string;
  amount: number | null;
  currency: string | null;
  touches: StoredTouch[] | null;
  half_life: number | null;
}

interface CreditWork {
  org_id: string;
  conversion_key: string;
  version: string;
  half_life: string;
  current_state: CreditState;
  credited_state: CreditState | null;
  /** the amounts as exact text (the states' JSON numbers may not be) */
  current_amount: string | null;
  credited_amount: string | null;
  /** the conversion's time as exact text (the next chunk's cursor) */
  converted_at: string;
}

export async function runAttribution(db: Queryable, input: AttributionInput = {}, onProgress?: (progress: JobProgress) => void) {
  const range = rangeOf(input);
  if (range) return rebuild(db, range, onProgress);
  const { rows } = await db.query<{ result: { skipped: boolean } & Record<string, unknown> }>('select private.attribution_step() as result');
  const step = rows[0]!.result;
  if (step.skipped) return step;
  return { ...step, ...(await buildAndCredit(db)) };
}

/** Builds every pending path, then writes every pending credit; reports what waits for bad settings. */
async function buildAndCredit(db: Queryable) {
  const summary = { paths_built: 0, paths_changed: 0, conversions_credited: 0, points: 0, build_ms: 0, credit_ms: 0 };
  const started = performance.now();
  // chunks in key order from a cursor; a pass that finds nothing past it starts again from the
  // beginning (paths marked behind the cursor meanwhile), and a pass from the beginning that finds
  // nothing ends the build
  let after: { org: string | null; key: string | null } = { org: null, key: null };
  for (let chunk = 0; chunk < MAX_CHUNKS; chunk += 1) {
    const { rows } = await db.query<{ built: number; changed: number; last_org: string | null; last_key: string | null }>(
      'select * from private.attribution_build($1, $2, $3)',
      [BUILD_CHUNK, after.org, after.key],
    );
    const result = rows[0]!;
    summary.paths_built += result.built;
    summary.paths_changed += result.changed;
    if (result.last_org === null) {
      if (after.org === null) break;
      after = { org: null, key: null };
    } else {
      after = { org: result.last_org, key: result.last_key };
    }
  }
  summary.build_ms = Math.round(performance.now() - started);
  // chunks in (organization, time) order from a cursor, as the paths
  let cursor: CreditCursor | null = null;
  for (let chunk = 0; chunk < MAX_CHUNKS; chunk += 1) {
    const written = await creditChunk(db, cursor);
    if (written === undefined) {
      if (cursor === null) break;
      cursor = null;
      continue;
    }
    summary.conversions_credited += written.credited;
    summary.points += written.points;
    // none of the chunk was still as read: another run is crediting them; it, or the next run, goes on
    if (written.credited === 0) break;
    cursor = written.last;
  }
  summary.credit_ms = Math.round(performance.now() - started) - summary.build_ms;
  const { rows } = await db.query<{ waiting: Array<{ org_id: string; error: string; field: string; waiting: number }> }>(
    'select private.attribution_waiting() as waiting',
  );
  // an organization whose settings are bad waits (its paths are kept pending); the others go on
  return rows[0]!.waiting.length > 0 ? { ...summary, settings_errors: rows[0]!.waiting } : summary;
}

/** Where a credit chunk ends: its last conversion's organization, exact time and key. */
interface CreditCursor {
  org: string;
  at: string;
  key: string;
}

/** Credits one chunk of pending conversions after the cursor; undefined when none is pending there. */
async function creditChunk(db: Queryable, after: CreditCursor | null): Promise<{ credited: number; points: number; last: CreditCursor } | undefined> {
  const { rows } = await db.query<CreditWork>('select * from private.attribution_credit_work($1, $2, $3, $4)', [
    CREDIT_CHUNK, after?.org ?? null, after?.at ?? null, after?.key ?? null,
  ]);
  if (rows.length === 0) return undefined;
  const lastRow = rows[rows.length - 1]!;
  const last = { org: lastRow.org_id, at: lastRow.converted_at, key: lastRow.conversion_key };
  const points = new CreditPoints();
  for (const work of rows) {
    const halfLife = Number(work.half_life);
    addContribution(points, work.org_id, work.current_state, work.current_amount, halfLife, 1n);
    // what the metrics hold for it, taken away
    if (work.credited_state) {
      addContribution(points, work.org_id, work.credited_state, work.credited_amount, work.credited_state.half_life ?? halfLife, -1n);
    }
  }
  const sums = points.columns();
  const { rows: written } = await db.query<{ credited: string; points: string }>(
    `select * from private.attribution_apply_credits($1::uuid[], $2::text[], $3::bigint[], $4::numeric[], $5::uuid[],
       $6::timestamptz[], $7::text[], $8::text[], $9::text[], $10::text[], $11::numeric[], $12::numeric[])`,
    [
      rows.map((w) => w.org_id), rows.map((w) => w.conversion_key), rows.map((w) => w.version), rows.map((w) => Number(w.half_life)),
      sums.orgs, sums.buckets, sums.currencies, sums.dimensions, sums.channels, sums.models, sums.conversions, sums.values,
    ],
  );
  return { credited: Number(written[0]!.credited), points: Number(written[0]!.points), last };
}

/** A conversion's credits in this state added to the chunk's points (`sign` -1n: taken away). */
function addContribution(points: CreditPoints, org: string, state: CreditState, amount: string | null, halfLifeDays: number, sign: 1n | -1n) {
  const bucket = bucketOf(state.ms);
  for (const [dimension, model, units] of contribution(state, halfLifeDays)) {
    for (const [channel, unit] of units) {
      points.add({ org, bucket, currency: state.currency, dimension, channel, model }, sign * unit, amount);
    }
  }
}

/**
 * What a conversion in this state adds to the metrics: per rule model and stored dimension, each
 * channel's credit in 10^-12 units, summing to exactly one conversion (SQL writes it as
 * attributed_conversions, and times the amount as attributed_value). Nothing unless approved with
 * a touch in its path.
 */
export function contribution(state: CreditState, halfLifeDays: number): Array<[StoredDimension, string, Map<string, bigint>]> {
  const touches = state.touches ?? [];
  if (state.status !== 'approved' || touches.length === 0) return [];
  const asTouches: Touch[] = touches.map((touch) => ({ at: touch.at, kind: touch.k === 'c' ? 'click' : 'view', channel: '' }));
  const credits: Array<[StoredDimension, string, Map<string, bigint>]> = [];
  for (const model of RULE_MODELS) {
    const perTouch = ruleCredits(model, asTouches, state.ms, { halfLifeDays });
    for (const dimension of STORED_DIMENSIONS) credits.push([dimension, model, toCreditUnits(creditByChannel(touches, perTouch, dimension))]);
  }
  return credits;
}

/** A path's credits summed per channel at a dimension. */
export function creditByChannel(touches: readonly StoredTouch[], credits: readonly number[], dimension: StoredDimension): Map<string, number> {
  const byChannel = new Map<string, number>();
  touches.forEach((touch, i) => {
    const channel = (dimension === 'campaign' ? touch.cmp : touch.crv) ?? '(none)';
    byChannel.set(channel, (byChannel.get(channel) ?? 0) + (credits[i] ?? 0));
  });
  return byChannel;
}

/**
 * Rebuilds the paths and credits of the conversions between two times, a day at a time (each day
 * its own steps), reporting progress: the day's touches re-read from the log where missing, its
 * attribution points removed, its paths built again with the settings of now, its credits
 * written again. Pending arrivals are folded in first.
 */
async function rebuild(db: Queryable, range: TimeRange, onProgress?: (progress: JobProgress) => void) {
  await runAttribution(db);
  const summary = { days: 0, touches: 0, paths: 0, paths_built: 0, conversions_credited: 0, points: 0 };
  summary.days = await eachDay(range, onProgress, async (start, end) => {
    const result = await rangeResult<{ touches: number; paths: number }>(db, 'select private.attribution_rebuild_between($1, $2) as result', start, end);
    summary.touches += result.touches;
    summary.paths += result.paths;
    const built = await buildAndCredit(db);
    summary.paths_built += built.paths_built;
    summary.conversions_credited += built.conversions_credited;
    summary.points += built.points;
  });
  return summary;
}

export const attributionJob: JobDefinition<AttributionInput> = {
  name: 'attribution',
  cron: '*/5 * * * *',
  run: (db, input, onProgress) => runAttribution(db, input, onProgress),
};
