import type { Queryable } from '../../core/db/port.ts';
import { PreciseError } from '../../core/errors.ts';
import type { JobDefinition } from '../job.ts';

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

export async function runRollup(db: Queryable, input: RollupInput = {}) {
  if (input.from || input.to) {
    const from = parseTime(input.from, 'from');
    const to = parseTime(input.to, 'to');
    if (to <= from) throw new PreciseError('invalid_argument', '--to must be after --from', { field: 'to' });
    const { rows } = await db.query<{ result: object }>('select private.rollup_metrics_between($1, $2) as result', [from, to]);
    return rows[0]!.result;
  }
  const { rows } = await db.query<{ result: object }>('select private.rollup_metrics() as result');
  return rows[0]!.result;
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
  run: (db, input) => runRollup(db, input),
};
