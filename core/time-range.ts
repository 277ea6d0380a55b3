import { PreciseError } from './errors.ts';
import { quoted } from './metrics-query.ts';

/**
 * The time parameters of the read API (GET /v1/metrics, GET /v1/attribution): ISO-8601 times
 * with an offset, or dates meaning local midnight in the request's time zone.
 */

// Dates and times of the years 2000 to 2100: the metrics' own range (buckets are binned from
// 2000-01-01), far inside what JavaScript and Postgres both read the same way.
const DATE = /^(?<year>\d{4})-(?<month>\d{2})-(?<day>\d{2})$/;
const TIME =
  /^(?<year>\d{4})-(?<month>\d{2})-(?<day>\d{2})T(?<hour>\d{2}):(?<minute>\d{2})(?::(?<second>\d{2})(?:\.(?<fraction>\d{1,9}))?)?(?:Z|(?<sign>[+-])(?<offsetHours>\d{2}):?(?<offsetMinutes>\d{2}))$/i;
const FIRST_YEAR = 2000;
const LAST_YEAR = 2100;

/** A time: ISO-8601 with an offset, as its UTC instant; a date as its local midnight in the time zone. */
export function timeParam(value: string | undefined, field: string, timeZone: string): string {
  if (!value) throw new PreciseError('validation_failed', `${field} is required (an ISO-8601 time or a date)`, { field });
  const refuse = (why: string) => new PreciseError('validation_failed', `${field} ${quoted(value)} ${why}`, { field });
  const match = DATE.exec(value) ?? TIME.exec(value);
  if (!match) throw refuse('is neither an ISO-8601 time with an offset (2026-03-07T10:00:00Z) nor a date (2026-03-07)');
  const part = (name: string) => Number(match.groups![name] ?? 0);
  const [year, month, day, hour, minute, second] = ['year', 'month', 'day', 'hour', 'minute', 'second'].map(part) as [number, number, number, number, number, number];
  if (year < FIRST_YEAR || year > LAST_YEAR) throw refuse(`is outside the years ${FIRST_YEAR} to ${LAST_YEAR}`);
  const local = Date.UTC(year, month - 1, day, hour, minute, second);
  const check = new Date(local);
  // Date.UTC rolls 02-30 over to 03-02: a date that does not come back the same is no date
  if (check.getUTCMonth() !== month - 1 || check.getUTCDate() !== day || hour > 23 || minute > 59 || second > 59) {
    throw refuse('is not a real date and time');
  }
  if (match.groups!.hour === undefined) return localMidnight(local, timeZone);
  if (part('offsetHours') > 18 || part('offsetMinutes') > 59) throw refuse('has an offset beyond ±18:00');
  const millis = Number((match.groups!.fraction ?? '').padEnd(3, '0').slice(0, 3));
  const offsetMs = (part('offsetHours') * 60 + part('offsetMinutes')) * 60_000 * (match.groups!.sign === '-' ? -1 : 1);
  return new Date(local + millis - offsetMs).toISOString();
}

/** The UTC instant of 00:00 on a date (given as that midnight read as UTC) in a time zone (exact, daylight-saving days included). */
function localMidnight(guess: number, timeZone: string): string {
  // the zone's offset at the guess, applied twice to settle on the right side of a change
  let instant = guess;
  for (let i = 0; i < 2; i += 1) instant = guess - offsetMs(instant, timeZone);
  return new Date(instant).toISOString();
}

function offsetMs(at: number, timeZone: string): number {
  const parts = new Intl.DateTimeFormat('en-US', {
    timeZone,
    hourCycle: 'h23',
    year: 'numeric',
    month: '2-digit',
    day: '2-digit',
    hour: '2-digit',
    minute: '2-digit',
    second: '2-digit',
  }).formatToParts(new Date(at));
  const get = (type: string) => Number(parts.find((p) => p.type === type)!.value);
  const local = Date.UTC(get('year'), get('month') - 1, get('day'), get('hour'), get('minute'), get('second'));
  return local - at;
}
