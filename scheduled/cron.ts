import type { Queryable } from '../core/db/port.ts';
import { PreciseError } from '../core/errors.ts';
import { JOBS } from './jobs/index.ts';

/**
 * A Worker's cron trigger, for a deployment without a Node worker (pg-boss): runs the jobs whose
 * cron it is (wrangler.toml's `[triggers]` list the jobs' own crons; the rollup and the alert
 * webhooks share every minute), one after the other, through the same SQL, each with what the
 * Worker's configuration gives it (`inputs`, by job name). A run that finds another one in
 * progress (a Node worker, an overlapping trigger) returns skipped; one job failing does not keep
 * the next from running.
 */
export async function runCronJobs(
  cron: string,
  db: Queryable,
  inputs: Record<string, object> = {},
): Promise<Array<{ job: string; result?: object; error?: string }>> {
  const jobs = JOBS.filter((candidate) => candidate.cron === cron);
  if (jobs.length === 0) {
    const crons = JOBS.map((candidate) => `${candidate.name} "${candidate.cron}"`).join(', ');
    throw new PreciseError('config_invalid', `no job runs at "${cron}" (${crons})`);
  }
  const runs: Array<{ job: string; result?: object; error?: string }> = [];
  for (const job of jobs) {
    try {
      runs.push({ job: job.name, result: await job.run(db, inputs[job.name] ?? {}) });
    } catch (error) {
      runs.push({ job: job.name, error: error instanceof Error ? error.message : String(error) });
    }
  }
  return runs;
}
