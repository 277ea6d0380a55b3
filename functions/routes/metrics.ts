import { Hono } from 'hono';
import { PreciseError } from '../../core/errors.ts';
import { GRANULARITIES, queryMetrics, validateMetricNames, validateTimeZone, type Granularity } from '../../core/metrics-query.ts';
import type { AppEnv } from '../env.ts';
import { requireKey } from '../middleware/auth.ts';

/**
 * GET /v1/metrics (secret key with `read`): `metric` (one or several, comma-separated or
 * repeated), `entity_type` (organization, campaign, creative, data_asset; default organization),
 * `entity_id`, `from`, `to` (ISO-8601 times, or dates meaning local midnight in `tz`),
 * `granularity` (hour, day, week, month), `tz` (IANA, default UTC), `currency`. Answers a series
 * of `{ bucket, metric, value }` read from the metrics rollup, never from raw events.
 */
export const metricsRoutes = new Hono<AppEnv>();

const DATE = /^\d{4}-\d{2}-\d{2}$/;
const MAX_BUCKETS = 10_000;
const BUCKET_MS: Record<Granularity, number> = { hour: 3_600_000, day: 86_400_000, week: 7 * 86_400_000, month: 28 * 86_400_000 };

metricsRoutes.get('/', requireKey({ kinds: ['secret'], scope: 'read', from: 'bearer' }), async (c) => {
  const key = c.get('key');
  const metrics = c.req.queries('metric')?.flatMap((value) => value.split(',')).map((name) => name.trim()).filter(Boolean) ?? [];
  if (metrics.length === 0) throw new PreciseError('validation_failed', 'metric is required (e.g. impressions,clicks,ctr)', { field: 'metric' });
  validateMetricNames(metrics);
  const timeZone = c.req.query('tz') || 'UTC';
  validateTimeZone(timeZone);
  const granularity = (c.req.query('granularity') || 'day') as Granularity;
  if (!GRANULARITIES.includes(granularity)) {
    throw new PreciseError('validation_failed', `granularity must be one of ${GRANULARITIES.join(', ')}`, { field: 'granularity' });
  }
  const entityType = c.req.query('entity_type') || 'organization';
  if (!/^[a-z][a-z0-9_]{0,62}$/.test(entityType)) throw new PreciseError('validation_failed', 'entity_type must be snake_case', { field: 'entity_type' });
  const entityId = entityType === 'organization' ? key.org_id : c.req.query('entity_id');
  if (!entityId) throw new PreciseError('validation_failed', `entity_id is required for entity_type ${entityType}`, { field: 'entity_id' });
  const from = timeParam(c.req.query('from'), 'from', timeZone);
  const to = timeParam(c.req.query('to'), 'to', timeZone);
  const currency = c.req.query('currency');
  if (currency && !/^[A-Z]{3}$/.test(currency)) throw new PreciseError('validation_failed', 'currency must be an ISO 4217 code', { field: 'currency' });

  if (Date.parse(to) <= Date.parse(from)) throw new PreciseError('validation_failed', 'to must be after from', { field: 'to' });
  const approxBuckets = (Date.parse(to) - Date.parse(from)) / BUCKET_MS[granularity];
  if (approxBuckets > MAX_BUCKETS) {
    throw new PreciseError('validation_failed', `at most ${MAX_BUCKETS} ${granularity} buckets per query: narrow from/to or use a coarser granularity`, { field: 'granularity' });
  }

  const data = await queryMetrics(c.get('services').metrics, { orgId: key.org_id, metrics, entityType, entityId, from, to, granularity, timeZone, currency });
  return c.json({ data, meta: { metrics, entity_type: entityType, entity_id: entityId, granularity, tz: timeZone, from, to } });
});

/** A time: ISO-8601 with an offset as it is; a date as its local midnight in the time zone (SQL resolves it). */
function timeParam(value: string | undefined, field: string, timeZone: string): string {
  if (!value) throw new PreciseError('validation_failed', `${field} is required (an ISO-8601 time or a date)`, { field });
  if (DATE.test(value)) return localMidnight(value, timeZone);
  const time = new Date(value);
  if (!/^\d{4}-\d{2}-\d{2}T/.test(value) || Number.isNaN(time.getTime())) {
    throw new PreciseError('validation_failed', `${field} must be an ISO-8601 time with an offset, or a date`, { field });
  }
  return time.toISOString();
}

/** The UTC instant of 00:00 on a date in a time zone (exact, daylight-saving days included). */
function localMidnight(date: string, timeZone: string): string {
  const guess = Date.parse(`${date}T00:00:00Z`);
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
