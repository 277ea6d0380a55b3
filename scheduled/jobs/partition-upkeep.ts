import type { Queryable } from '../../core/db/port.ts';
import { PreciseError } from '../../core/errors.ts';
import type { JobDefinition } from '../job.ts';


/**
 * Keeps a partition of events ready for every UTC day from yesterday to `daysAhead` ahead,
 * and carves out of events_default every day that landed there before its partition existed
 * (so retention drops it by whole partition like any other day).
 * The work is the SQL function private.ensure_event_partitions, so psql or a Worker cron can
 * run the same thing.
 */
export interface PartitionUpkeepInput {
  daysBack?: number;
  daysAhead?: number;
  /** drop raw-event partitions older than this many days (metrics are kept); unset: keep all */
  retentionDays?: number;
}

export async function ensureEventPartitions(db: Queryable, input: PartitionUpkeepInput = {}) {
  const daysBack = input.daysBack ?? 1;
  const daysAhead = input.daysAhead ?? 14;
  const { rows } = await db.query<{ created: number }>(
    `select private.ensure_event_partitions(
       (now() at time zone 'UTC')::date - $1::int,
       (now() at time zone 'UTC')::date + $2::int) as created`,
    [daysBack, daysAhead],
  );
  // stray days (far past or future) that landed in events_default get their own partition too
  const strays = await db.query<{ carved: number }>('select private.carve_default_event_days() as carved');
  return { created: rows[0]!.created, carved: strays.rows[0]!.carved, daysBack, daysAhead };
}

/**
 * Drops the raw-event partitions of days before `retentionDays` ago, once their events are in
 * the metrics (it runs a rollup step first, and postpones the drop while older events are still
 * pending); metrics stay.
 */
export async function applyRetention(db: Queryable, retentionDays: number) {
  if (!Number.isInteger(retentionDays) || retentionDays < 1) {
    throw new PreciseError('invalid_argument', 'retention must be a whole number of days, at least 1', { field: 'retentionDays' });
  }
  const { rows } = await db.query<{ result: { dropped: string[]; ledger_rows_pruned?: number; postponed: boolean; reason?: string } }>(
    `select private.apply_event_retention((now() at time zone 'UTC')::date - $1::int) as result`,
    [retentionDays],
  );
  return rows[0]!.result;
}

export const partitionUpkeepJob: JobDefinition<PartitionUpkeepInput> = {
  name: 'partition-upkeep',
  // daily, shortly after midnight UTC, plus once at every scheduler start (see scheduler.ts)
  cron: '7 0 * * *',
  run: async (db, input) => {
    const partitions = await ensureEventPartitions(db, input);
    const retentionDays = input.retentionDays;
    return retentionDays ? { ...partitions, retention: { days: retentionDays, ...(await applyRetention(db, retentionDays)) } } : partitions;
  },
};
