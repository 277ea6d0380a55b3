import type { Queryable } from '../core/db/port.ts';
import { PreciseError } from '../core/errors.ts';
import type { JobProgress } from './job.ts';

/** The range a job rebuilds (`precise jobs run NAME --from … --to …`). */
export interface TimeRange {
  from: Date;
  to: Date;
}

/** The range named by a job's input, or null when it names none (an incremental run). */
export function rangeOf(input: { from?: string; to?: string }): TimeRange | null {
  if (!input.from && !input.to) return null;
  const from = parseTime(input.from, 'from');
  const to = parseTime(input.to, 'to');
  if (to <= from) throw new PreciseError('invalid_argument', '--to must be after --from', { field: 'to' });
  return { from, to };
}

function parseTime(value: string | undefined, field: string): Date {
  const time = value ? new Date(value) : new Date(NaN);
  if (Number.isNaN(time.getTime())) {
    throw new PreciseError('invalid_argument', `--${field} must be an ISO-8601 time, e.g. 2026-11-01T00:00:00Z`, { field });
  }
  return time;
}

const DAY_MS = 86_400_000;

/**
 * Rebuilds a range a day at a time, each day its own transaction(s) in `rebuildDay`, reporting
 * progress after each. Returns the number of days.
 */
export async function eachDay(
  range: TimeRange,
  onProgress: ((progress: JobProgress) => void) | undefined,
  rebuildDay: (start: Date, end: Date) => Promise<void>,
): Promise<number> {
  const total = Math.ceil((range.to.getTime() - range.from.getTime()) / DAY_MS);
  for (let i = 0; i < total; i += 1) {
    const start = new Date(range.from.getTime() + i * DAY_MS);
    const end = new Date(Math.min(range.to.getTime(), start.getTime() + DAY_MS));
    await rebuildDay(start, end);
    onProgress?.({ done: i + 1, total });
  }
  return total;
}

/**
 * Calls a SQL function of a range (`select fn($1, $2) as result`) and returns its result. The
 * functions refuse a range before the start of the retained log with 22023, a 400 naming `from`.
 */
export async function rangeResult<T>(db: Queryable, sql: string, start: Date, end: Date): Promise<T> {
  const { rows } = await db.query<{ result: T }>(sql, [start, end]).catch((error: { code?: string; message?: string }) => {
    if (error.code === '22023') throw new PreciseError('invalid_argument', error.message ?? 'bad range', { field: 'from' });
    throw error;
  });
  return rows[0]!.result;
}
