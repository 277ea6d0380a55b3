import { Hono } from 'hono';
import { PreciseError } from '../../core/errors.ts';
import {
  GRANULARITIES,
  NO_CURRENCY,
  queryMetrics,
  quoted,
  validateEntityId,
  validateEntityType,
  validateMetricNames,
  validateTimeZone,
  type Granularity,
} from '../../core/metrics-query.ts';
import type { AppEnv } from '../env.ts';
import { requireKey } from '../middleware/auth.ts';

/**
 * GET /v1/metrics (secret key with `read`): `metric` (one or several, comma-separated or
 * repeated), `entity_type` (organization, campaign, creative, data_asset; default organization),
 * `entity_id` (one the caller's organization may see, else 404), `from`, `to` (ISO-8601 times with
 * an offset, or dates meaning local midnight in `tz`, in the years 2000 to 2100), `granularity`
 * (hour, day, week, month), `tz` (an IANA name, default UTC), `currency` (ISO 4217, or `none`).
 * Answers a series of `{ bucket, metric, value }` read from the metrics rollup, never from raw events.
 */
export const metricsRoutes = new Hono<AppEnv>();

const MAX_BUCKETS = 10_000;
const BUCKET_MS: Record<Granularity, number> = { hour: 3_600_000, day: 86_400_000, week: 7 * 86_400_000, month: 28 * 86_400_000 };

metricsRoutes.get('/', requireKey({ kinds: ['secret'], scope: 'read', from: 'bearer' }), async (c) => {
  const key = c.get('key');
  const metrics = [...new Set(c.req.queries('metric')?.flatMap((value) => value.split(',')).map((name) => name.trim()).filter(Boolean))];
  if (metrics.length === 0) throw new PreciseError('validation_failed', 'metric is required (e.g. impressions,clicks,ctr)', { field: 'metric' });
  validateMetricNames(metrics);
  const timeZone = c.req.query('tz') || 'UTC';
  validateTimeZone(timeZone);
  const granularity = (c.req.query('granularity') || 'day') as Granularity;
  if (!GRANULARITIES.includes(granularity)) {
    throw new PreciseError('validation_failed', `granularity must be one of ${GRANULARITIES.join(', ')}`, { field: 'granularity' });
  }
  const entityType = validateEntityType(c.req.query('entity_type') || 'organization');
  const givenId = c.req.query('entity_id') || (entityType === 'organization' ? key.org_id : undefined);
  if (!givenId) throw new PreciseError('validation_failed', `entity_id is required for entity_type ${entityType}`, { field: 'entity_id' });
  const entityId = validateEntityId(entityType, givenId);
  const from = timeParam(c.req.query('from'), 'from', timeZone);
  const to = timeParam(c.req.query('to'), 'to', timeZone);
  const currency = currencyParam(c.req.query('currency'));

  if (Date.parse(to) <= Date.parse(from)) throw new PreciseError('validation_failed', 'to must be after from', { field: 'to' });
  const approxBuckets = (Date.parse(to) - Date.parse(from)) / BUCKET_MS[granularity];
  if (approxBuckets > MAX_BUCKETS) {
    throw new PreciseError('validation_failed', `at most ${MAX_BUCKETS} ${granularity} buckets per query: narrow from/to or use a coarser granularity`, { field: 'granularity' });
  }

  const data = await queryMetrics(c.get('services').metrics, { orgId: key.org_id, metrics, entityType, entityId, from, to, granularity, timeZone, currency });
  return c.json({ data, meta: { metrics, entity_type: entityType, entity_id: entityId, granularity, tz: timeZone, from, to } });
});

/** An ISO 4217 code as it is, `none` as '' (the amounts sent without a currency). */
function currencyParam(value: string | undefined): string | undefined {
  if (!value) return undefined;
  if (value === NO_CURRENCY) return '';
  if (!/^[A-Z]{3}$/.test(value)) throw new PreciseError('validation_failed', `currency must be an ISO 4217 code or ${NO_CURRENCY}`, { field: 'currency' });
  return value;
}

// Dates and times of the years 2000 to 2100: the metrics' own range (buckets are binned from
// 2000-01-01), far inside what JavaScript and Postgres both read the same way.
const DATE = /^(?<year>\d{4})-(?<month>\d{2})-(?<day>\d{2})$/;
const TIME =
  /^(?<year>\d{4})-(?<month>\d{2})-(?<day>\d{2})T(?<hour>\d{2}):(?<minute>\d{2})(?::(?<second>\d{2})(?:\.(?<fraction>\d{1,9}))?)?(?:Z|(?<sign>[+-])(?<offsetHours>\d{2}):?(?<offsetMinutes>\d{2}))$/i;
const FIRST_YEAR = 2000;
const LAST_YEAR = 2100;

/** A time: ISO-8601 with an offset, as its UTC instant; a date as its local midnight in the time zone. */
function timeParam(value: string | undefined, field: string, timeZone: string): string {
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
