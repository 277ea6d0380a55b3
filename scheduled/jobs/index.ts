import type { JobDefinition } from '../job.ts';
import { partitionUpkeepJob } from './partition-upkeep.ts';

/** Every job the scheduler knows. Later jobs (rollup, fatigue, attribution, billing) join here. */
export const JOBS: JobDefinition<any>[] = [{ ...partitionUpkeepJob, runAtStart: true }];

export function findJob(name: string): JobDefinition<any> | undefined {
  return JOBS.find((job) => job.name === name);
}
