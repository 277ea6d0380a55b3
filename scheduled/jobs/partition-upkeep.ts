import type { Queryable } from '../../core/db/port.ts';
import type { JobDefinition } from '../job.ts';

/**
 * Keeps a partition of events ready for every UTC day from yesterday to `daysAhead` ahead,
 * and carves out of events_default any day that landed there before its partition existed.
 * The work is the SQL function private.ensure_event_partitions, so psql or a Worker cron can
 * run the same thing.
 */
export interface PartitionUpkeepInput {
  daysBack?: number;
  daysAhead?: number;
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
  return { created: rows[0]!.created, daysBack, daysAhead };
}

export const partitionUpkeepJob: JobDefinition<PartitionUpkeepInput> = {
  name: 'partition-upkeep',
  // daily, shortly after midnight UTC, plus once at every scheduler start (see scheduler.ts)
  cron: '7 0 * * *',
  run: (db, input) => ensureEventPartitions(db, input),
};
