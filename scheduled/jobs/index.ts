import type { JobDefinition } from '../job.ts';
import { alertWebhooksJob } from './alert-webhooks.ts';
import { attributionJob } from './attribution.ts';
import { creativeFatigueJob } from './creative-fatigue.ts';
import { partitionUpkeepJob } from './partition-upkeep.ts';
import { rollupJob } from './rollup.ts';

/** Every job the scheduler knows. Later jobs (billing) join here. */
export const JOBS: JobDefinition<any>[] = [{ ...partitionUpkeepJob, runAtStart: true }, rollupJob, attributionJob, creativeFatigueJob, alertWebhooksJob];

export function findJob(name: string): JobDefinition<any> | undefined {
  return JOBS.find((job) => job.name === name);
}
