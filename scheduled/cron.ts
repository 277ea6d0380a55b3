import type { Queryable } from '../core/db/port.ts';
import { PreciseError } from '../core/errors.ts';
import { JOBS } from './jobs/index.ts';

/**
 * A Worker's cron trigger, for a deployment without a Node worker (pg-boss): runs the job whose
 * cron it is (wrangler.toml's `[triggers]` list the jobs' own crons), through the same SQL. A run
 * that finds another one in progress (a Node worker, an overlapping trigger) returns skipped.
 */
export async function runCronJob(cron: string, db: Queryable): Promise<{ job: string; result: object }> {
  const job = JOBS.find((candidate) => candidate.cron === cron);
  if (!job) {
    const crons = JOBS.map((candidate) => `${candidate.name} "${candidate.cron}"`).join(', ');
    throw new PreciseError('config_invalid', `no job runs at "${cron}" (${crons})`);
  }
  return { job: job.name, result: await job.run(db, {}) };
}
