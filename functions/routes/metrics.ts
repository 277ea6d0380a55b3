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
import { timeParam } from '../../core/time-range.ts';
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
