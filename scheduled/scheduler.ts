import { PgBoss } from 'pg-boss';
import type { Database } from '../core/db/port.ts';
import type { JobDefinition } from './job.ts';
import { JOBS } from './jobs/index.ts';

/**
 * The pg-boss scheduler: runs in `precise start` and in any number of `precise worker`
 * processes on the same database. pg-boss brings the cron schedule, retries with backoff,
 * and `exclusive` queues (one job of a kind queued or running at a time, across processes).
 */
export interface Scheduler {
  boss: PgBoss;
  stop(): Promise<void>;
}

export interface SchedulerOptions {
  connectionString: string;
  db: Database;
  jobs?: JobDefinition<any>[];
  /** Inputs every run of a job gets (from configuration), under what a run was sent with. */
  defaults?: Record<string, object>;
  log?: (message: string) => void;
}

export async function startScheduler(options: SchedulerOptions): Promise<Scheduler> {
  const log = options.log ?? (() => {});
  const jobs = options.jobs ?? JOBS;
  const boss = new PgBoss({
    connectionString: options.connectionString,
    application_name: 'precise-jobs',
    max: 4,
  });
  boss.on('error', (error) => log(`jobs: ${error.message}`));
  await boss.start();

  for (const job of jobs) {
    await boss.createQueue(job.name, {
      policy: 'exclusive',
      retryLimit: 5,
      retryDelay: 5,
      retryBackoff: true,
      expireInSeconds: 3600,
    });
    // batchSize 1: the handler's result is the job's output (shown by `precise jobs status`)
    await boss.work<object>(job.name, { batchSize: 1 }, async ([item]) => {
      const started = performance.now();
      const result = await job.run(options.db, { ...options.defaults?.[job.name], ...item!.data });
      log(`jobs: ${job.name} done in ${Math.round(performance.now() - started)} ms ${JSON.stringify(result)}`);
      return result;
    });
    if (job.cron) await boss.schedule(job.name, job.cron, {}, { tz: 'UTC' });
    if (job.runAtStart) await boss.send(job.name, {});
  }

  return {
    boss,
    stop: () => boss.stop({ graceful: true, timeout: 30_000 }),
  };
}
