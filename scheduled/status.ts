import type { Queryable } from '../core/db/port.ts';
import { JOBS } from './jobs/index.ts';

/**
 * What `precise jobs status` shows: per job its schedule, last run (when, how long, what it
 * did), what waits or runs now, and its failures, read from pg-boss's tables; plus the
 * rollup's watermark and last figures.
 */
export interface JobStatus {
  name: string;
  cron: string | null;
  last_completed_at: Date | null;
  last_duration_ms: number | null;
  last_output: unknown;
  queued: number;
  active: number;
  failures: number;
  last_failure: unknown;
}

export async function jobsStatus(db: Queryable) {
  const names = JOBS.map((job) => job.name);
  const { rows: installed } = await db.query<{ ok: boolean }>(`select to_regclass('pgboss.job') is not null as ok`);
  const jobs: JobStatus[] = installed[0]!.ok
    ? (
        await db.query<JobStatus>(
          `select n.name,
                  (select s.cron from pgboss.schedule s where s.name = n.name limit 1) as cron,
                  max(j.completed_on) filter (where j.state = 'completed') as last_completed_at,
                  (array_agg(round(extract(epoch from j.completed_on - j.started_on) * 1000)::int order by j.completed_on desc)
                     filter (where j.state = 'completed'))[1] as last_duration_ms,
                  (array_agg(j.output order by j.completed_on desc) filter (where j.state = 'completed'))[1] as last_output,
                  (count(*) filter (where j.state in ('created', 'retry')))::int as queued,
                  (count(*) filter (where j.state = 'active'))::int as active,
                  (count(*) filter (where j.state = 'failed'))::int as failures,
                  (array_agg(j.output order by j.completed_on desc) filter (where j.state = 'failed'))[1] as last_failure
           from unnest($1::text[]) as n(name)
           left join pgboss.job j on j.name = n.name
           group by n.name
           order by n.name`,
          [names],
        )
      ).rows
    : names.map((name) => ({ name, cron: null, last_completed_at: null, last_duration_ms: null, last_output: null, queued: 0, active: 0, failures: 0, last_failure: null }));
  const { rows: rollups } = await db.query(
    `select name, watermark::text as watermark, last_run_at, last_duration_ms, last_events, last_buckets, last_rows, runs::int as runs
     from public.rollup_state order by name`,
  );
  return { scheduler_installed: installed[0]!.ok, jobs, rollups };
}
