import type { Database } from '../core/db/port.ts';

/** A scheduled job: a name (its pg-boss queue), an optional cron (UTC) and the work. */
export interface JobDefinition<Input extends object = object> {
  name: string;
  cron?: string;
  /** Runs once when a scheduler starts too, so a fresh stack does not wait for the first cron. */
  runAtStart?: boolean;
  run(db: Database, input: Input): Promise<object>;
}
