import type { Queryable } from '../../core/db/port.ts';
import { PreciseError } from '../../core/errors.ts';
import type { JobDefinition } from '../job.ts';

/** How long upkeep and retention may wait for a lock on events: an insert waits at most this, once. */
export const PARTITION_LOCK_TIMEOUT_MS = 2000;
/** How long a partition drop waits for a running reader of the log (the rollup, attribution's or
 * creative fatigue's step) to finish (this wait holds up no insert). */
export const RETENTION_ROLLUP_WAIT_MS = 60_000;

/**
 * Keeps a partition of events ready for every UTC day from yesterday to `daysAhead` ahead,
 * and carves out of events_default every day that landed there before its partition existed
 * (so retention drops it by whole partition like any other day), in one transaction that waits
 * at most PARTITION_LOCK_TIMEOUT_MS for its lock on events (inserts queue behind that wait).
 * The work is the SQL function private.upkeep_event_partitions, so psql or a Worker cron can
 * run the same thing.
 */
export interface PartitionUpkeepInput {
  daysBack?: number;
  daysAhead?: number;
  /** drop raw-event partitions older than this many days (metrics are kept); unset: keep all */
  retentionDays?: number;
}

export async function ensureEventPartitions(db: Queryable, input: PartitionUpkeepInput = {}, lockTimeoutMs = PARTITION_LOCK_TIMEOUT_MS) {
  const daysBack = input.daysBack ?? 1;
  const daysAhead = input.daysAhead ?? 14;
  // one transaction that waits at most lockTimeoutMs for its lock on events (locked: the next
  // run makes them); stray days that landed in events_default get their own partition too
  const { rows } = await db.query<{ result: { created: number; carved: number; locked: boolean } }>(
    `select private.upkeep_event_partitions(
       (now() at time zone 'UTC')::date - $1::int,
       (now() at time zone 'UTC')::date + $2::int, $3) as result`,
    [daysBack, daysAhead, lockTimeoutMs],
  );
  return { ...rows[0]!.result, daysBack, daysAhead };
}

export interface RetentionOptions {
  lockTimeoutMs?: number;
  rollupWaitMs?: number;
}

/** The readers of the log, by their rollup_state row: a partition goes once each has read it. */
export type LogReader = 'metrics_15m' | 'attribution' | 'creative_fatigue' | 'alert_webhooks';

/** A partition retention left for its next run, and why. */
export interface DeferredPartition {
  partition: string;
  /** postponed: events a reader of the log has not read yet; locked: no lock on events in time;
   * busy: a reader kept running; not_tried: after a locked or busy one, this run tries no more */
  reason: 'postponed' | 'locked' | 'busy' | 'not_tried';
  /** postponed and busy: the readers waited for */
  waiting_for?: LogReader[];
}

export interface RetentionResult {
  cutoff: string;
  dropped: string[];
  deferred: DeferredPartition[];
  ledger_rows_pruned: number;
  attribution_touches_pruned: number;
  /** each reader's step, run first */
  rollup: object;
  attribution_step: object;
  fatigue_step: object;
  alert_step: object;
}

/**
 * Drops the raw-event partitions of days before `retentionDays` ago, once every reader of the
 * log has read their events (the metrics, attribution's touches and conversions, creative
 * fatigue's creatives, the alert webhooks' deliveries: each reader's step first; a partition with events one has not read
 * waits), each in its own short transaction that waits at most `lockTimeoutMs` for its lock on
 * events: ingestion never queues behind retention for longer. A partition it cannot lock stays
 * for the next run, and so do the rest (they need the same lock). Metrics and attribution paths
 * stay; the dedup ledger is pruned, but never within the age of events still accepted, and so
 * are the attribution touches no path can take any more.
 */
export async function applyRetention(db: Queryable, retentionDays: number, options: RetentionOptions = {}): Promise<RetentionResult> {
  if (!Number.isInteger(retentionDays) || retentionDays < 1) {
    throw new PreciseError('invalid_argument', 'retention must be a whole number of days, at least 1', { field: 'retentionDays' });
  }
  const { rows: cutoffRows } = await db.query<{ cutoff: string }>(
    `select ((now() at time zone 'UTC')::date - $1::int)::text as cutoff`,
    [retentionDays],
  );
  const cutoff = cutoffRows[0]!.cutoff;
  // each step in its own transaction; one already running elsewhere answers skipped
  const step = async (fn: string) => (await db.query<{ result: object }>(`select private.${fn}() as result`)).rows[0]!.result;
  const rollup = await step('rollup_metrics');
  const attributionStep = await step('attribution_step');
  const fatigueStep = await step('fatigue_map_step');
  const alertStep = await step('alert_enqueue_step');
  const { rows: due } = await db.query<{ name: string }>('select private.event_partitions_before($1::date) as name', [cutoff]);
  const { dropped, deferred } = await dropPartitions(db, due.map((row) => row.name), cutoff, options);
  const prune = async (fn: string) => Number((await db.query<{ pruned: string }>(`select private.${fn}($1::date) as pruned`, [cutoff])).rows[0]!.pruned);
  return {
    cutoff,
    dropped,
    deferred,
    ledger_rows_pruned: await prune('prune_event_id_ledger'),
    attribution_touches_pruned: await prune('prune_attribution_touches'),
    rollup,
    attribution_step: attributionStep,
    fatigue_step: fatigueStep,
    alert_step: alertStep,
  };
}

/** Drops the partitions one per statement (so one transaction each: never call this inside one). */
async function dropPartitions(db: Queryable, names: string[], cutoff: string, options: RetentionOptions) {
  const lockTimeoutMs = options.lockTimeoutMs ?? PARTITION_LOCK_TIMEOUT_MS;
  const rollupWaitMs = options.rollupWaitMs ?? RETENTION_ROLLUP_WAIT_MS;
  const dropped: string[] = [];
  const deferred: DeferredPartition[] = [];
  let stopped = false;
  for (const name of names) {
    if (stopped) {
      deferred.push({ partition: name, reason: 'not_tried' });
      continue;
    }
    const { rows } = await db.query<{ result: { status: 'dropped' | 'absent' | DeferredPartition['reason']; waiting_for?: LogReader[] } }>(
      'select private.drop_event_partition($1, $2::date, $3, $4) as result',
      [name, cutoff, lockTimeoutMs, rollupWaitMs],
    );
    const { status, waiting_for } = rows[0]!.result;
    if (status === 'dropped') dropped.push(name);
    else if (status !== 'absent') deferred.push({ partition: name, reason: status, ...(waiting_for ? { waiting_for } : {}) });
    stopped = status === 'locked' || status === 'busy';
  }
  return { dropped, deferred };
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
