import type { Queryable } from '../../core/db/port.ts';
import { PreciseError } from '../../core/errors.ts';
import type { JobDefinition, JobProgress } from '../job.ts';

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
  if (input.from || input.to) {
    const from = parseTime(input.from, 'from');
    const to = parseTime(input.to, 'to');
    if (to <= from) throw new PreciseError('invalid_argument', '--to must be after --from', { field: 'to' });
    return backfill(db, from, to, onProgress);
  }
  const { rows } = await db.query<{ result: object }>('select private.rollup_metrics() as result');
  return rows[0]!.result;
}

/**
 * Recomputes a range a day at a time (each day one transaction), reporting progress. A recompute
 * counts the events below the watermark, so pending events are folded in first.
 */
async function backfill(db: Queryable, from: Date, to: Date, onProgress?: (progress: BackfillProgress) => void) {
  await db.query('select private.rollup_metrics()');
  const day = 86_400_000;
  const total = Math.ceil((to.getTime() - from.getTime()) / day);
  const summary = { days: total, buckets: 0, rows: 0 };
  for (let i = 0; i < total; i += 1) {
    const start = new Date(from.getTime() + i * day);
    const end = new Date(Math.min(to.getTime(), start.getTime() + day));
    const { rows } = await db
      .query<{ result: { buckets: number; rows: number } }>('select private.rollup_metrics_between($1, $2) as result', [start, end])
      .catch((error: { code?: string; message?: string }) => {
        // a range before the start of the retained log
        if (error.code === '22023') throw new PreciseError('invalid_argument', error.message ?? 'bad range', { field: 'from' });
        throw error;
      });
    summary.buckets += rows[0]!.result.buckets;
    summary.rows += Number(rows[0]!.result.rows);
    onProgress?.({ done: i + 1, total });
  }
  return summary;
}

function parseTime(value: string | undefined, field: string): Date {
  const time = value ? new Date(value) : new Date(NaN);
  if (Number.isNaN(time.getTime())) {
    throw new PreciseError('invalid_argument', `--${field} must be an ISO-8601 time, e.g. 2026-11-01T00:00:00Z`, { field });
  }
  return time;
}

export const rollupJob: JobDefinition<RollupInput> = {
  name: 'rollup',
  cron: '* * * * *',
  run: (db, input, onProgress) => runRollup(db, input, onProgress),
};
