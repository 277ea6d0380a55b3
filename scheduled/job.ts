import type { Queryable } from '../core/db/port.ts';

/** How far a long run is (a range recompute's days), for a progress bar. */
export interface JobProgress {
  done: number;
  total: number;
}

/** A scheduled job: a name (its pg-boss queue), an optional cron (UTC) and the work. */
export interface JobDefinition<Input extends object = object> {
  name: string;
  cron?: string;
  /** Runs once when a scheduler starts too, so a fresh stack does not wait for the first cron. */
  runAtStart?: boolean;
  /** The work: plain SQL through the port, so pg-boss, the CLI and a Worker cron can all run it. */
  run(db: Queryable, input: Input, onProgress?: (progress: JobProgress) => void): Promise<object>;
}
