import type { Queryable } from '../../core/db/port.ts';
import type { JobDefinition, JobProgress } from '../job.ts';
import { eachDay, rangeOf, rangeResult, type TimeRange } from '../range.ts';

/**
 * Rolls events into metrics at the 15-minute grain: private.rollup_metrics() folds in what
 * arrived since its watermark (a transaction id, see the migration); with `from`/`to` it
 * recomputes every bucket between two times instead (a backfill or a repair). Both are
 * idempotent. The set-based work is SQL, so psql or a Worker's scheduled() can run it too.
 */
export interface RollupInput {
  from?: string;
  to?: string;
}

export type BackfillProgress = JobProgress;

export async function runRollup(db: Queryable, input: RollupInput = {}, onProgress?: (progress: BackfillProgress) => void) {
  const range = rangeOf(input);
  if (range) return backfill(db, range, onProgress);
  const { rows } = await db.query<{ result: object }>('select private.rollup_metrics() as result');
  return rows[0]!.result;
}

/**
 * Recomputes a range a day at a time (each day one transaction), reporting progress. A recompute
 * counts the events below the watermark, so pending events are folded in first.
 */
async function backfill(db: Queryable, range: TimeRange, onProgress?: (progress: BackfillProgress) => void) {
  await db.query('select private.rollup_metrics()');
  const summary = { days: 0, buckets: 0, rows: 0 };
  summary.days = await eachDay(range, onProgress, async (start, end) => {
    const result = await rangeResult<{ buckets: number; rows: number }>(db, 'select private.rollup_metrics_between($1, $2) as result', start, end);
    summary.buckets += result.buckets;
    summary.rows += Number(result.rows);
  });
  return summary;
}

export const rollupJob: JobDefinition<RollupInput> = {
  name: 'rollup',
  cron: '* * * * *',
  run: (db, input, onProgress) => runRollup(db, input, onProgress),
};
