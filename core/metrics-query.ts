import type { Queryable } from './db/port.ts';
import { callRpc, type SupabaseClient } from './db/supabase.ts';
import { PreciseError } from './errors.ts';
import { isUuid } from './events/canonical.ts';

/**
 * Reading metrics: sums of the stored 15-minute points into hours, days, weeks or months of any
 * IANA time zone (public.metric_buckets, exact since every zone's offset is a multiple of 15
 * minutes), and ratios computed from the summed counters, never averaged.
 */
export const STORED_METRICS = [
  'impressions',
  'clicks',
  'conversions',
  'conversion_value',
  'spend',
  'data_usage',
  'bot_impressions',
  'bot_clicks',
] as const;

/** Ratios: numerator / denominator of summed counters (null where the denominator is 0). */
export const DERIVED_METRICS: ReadonlyMap<string, readonly [string, string]> = new Map([
  ['ctr', ['clicks', 'impressions']],
  ['cvr', ['conversions', 'clicks']],
  ['cpa', ['spend', 'conversions']],
  ['roas', ['conversion_value', 'spend']],
] as const);

const METRIC_NAMES: ReadonlySet<string> = new Set([...STORED_METRICS, ...DERIVED_METRICS.keys()]);

export const GRANULARITIES = ['hour', 'day', 'week', 'month'] as const;
export type Granularity = (typeof GRANULARITIES)[number];

/** The entities metrics are kept for; all but creatives are UUIDs (a creative id is free text on events). */
export const ENTITY_TYPES = ['organization', 'campaign', 'creative', 'data_asset'] as const;
export type EntityType = (typeof ENTITY_TYPES)[number];

/** `currency=none`: the amounts sent without a currency (their own currency, '' in SQL). */
export const NO_CURRENCY = 'none';

export interface MetricsQuery {
  orgId: string;
  metrics: string[];
  entityType: EntityType;
  entityId: string;
  from: string;
  to: string;
  granularity: Granularity;
  timeZone: string;
  /** an ISO 4217 code, or '' for amounts without a currency */
  currency?: string;
}

export interface MetricPoint {
  bucket: string;
  metric: string;
  value: number | null;
}

/** A user-supplied value inside a message: quoted, and short whatever was sent. */
export function quoted(value: string): string {
  return JSON.stringify(value.length > 64 ? `${value.slice(0, 64)}…` : value);
}

export function validateMetricNames(names: string[]): void {
  for (const name of names) {
    if (!METRIC_NAMES.has(name)) {
      throw new PreciseError('validation_failed', `unknown metric ${quoted(name)} (known: ${[...METRIC_NAMES].join(', ')})`, { field: 'metric' });
    }
  }
}

export function validateEntityType(name: string): EntityType {
  const known = ENTITY_TYPES.find((type) => type === name);
  if (!known) {
    throw new PreciseError('validation_failed', `unknown entity_type ${quoted(name)} (known: ${ENTITY_TYPES.join(', ')})`, { field: 'entity_type' });
  }
  return known;
}

// control characters and unpaired surrogates: never in an id Postgres stored
const NOT_IN_IDS = /[\u0000-\u001f\u007f-\u009f]|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

/** An entity id as stored: a lowercase UUID, or a creative id (1–128 characters, as on events). */
export function validateEntityId(entityType: EntityType, id: string): string {
  if (entityType === 'creative') {
    if (id.length > 128 || NOT_IN_IDS.test(id)) {
      throw new PreciseError('validation_failed', 'entity_id of a creative is 1 to 128 characters, no control characters', { field: 'entity_id' });
    }
    return id;
  }
  if (!isUuid(id)) throw new PreciseError('validation_failed', `entity_id of ${entityType === 'organization' ? 'an' : 'a'} ${entityType} must be a UUID`, { field: 'entity_id' });
  return id.toLowerCase();
}

// IANA names: Area/Location (Etc/GMT+5, America/Argentina/Salta), or UTC. Refused: offsets
// (+05:30 is UTC+05:30 to JavaScript, UTC-05:30 to Postgres), and names without an area, which
// Postgres may read as an abbreviation of another meaning (CET: always +01:00 to Postgres,
// Central European Time with summer time to JavaScript) or as a POSIX rule (EST5EDT).
const IANA_NAME = /^[A-Za-z][A-Za-z_-]*(\/[A-Za-z0-9_+-]+){1,2}$/;

export function validateTimeZone(timeZone: string): void {
  const unknown = () =>
    new PreciseError('validation_failed', `unknown time zone ${quoted(timeZone)} (an IANA name, e.g. Asia/Kathmandu or UTC)`, { field: 'tz' });
  if (timeZone !== 'UTC' && !IANA_NAME.test(timeZone)) throw unknown();
  try {
    new Intl.DateTimeFormat('en-US', { timeZone });
  } catch {
    throw unknown();
  }
}

/** A local bucket, its UTC offset in minutes, and a summed metric (or none: an empty bucket). */
export type BucketRow = [localBucket: string, offsetMinutes: number, metric: string | null, value: string | null];

/**
 * What public.metric_buckets answers: the rows, and the currencies of the amounts summed ('' for
 * amounts without one); or the parameter it refused (an entity the org may not see, a time zone
 * the database does not know).
 */
export type MetricBuckets = { currencies: string[]; rows: BucketRow[]; refused?: undefined } | { refused: 'entity_id' | 'tz' };

/** Where the sums come from: SQL (Postgres, PGlite, Hyperdrive) or supabase-js rpc. */
export interface MetricsReader {
  buckets(query: MetricsQuery, metrics: string[]): Promise<MetricBuckets>;
}

export function sqlMetricsReader(db: Queryable): MetricsReader {
  return {
    async buckets(query, metrics) {
      const { rows } = await db.query<{ result: MetricBuckets }>(
        'select public.metric_buckets($1, $2, $3, $4::text[], $5::timestamptz, $6::timestamptz, $7, $8, $9) as result',
        [query.orgId, query.entityType, query.entityId, metrics, query.from, query.to, query.granularity, query.timeZone, query.currency ?? null],
      );
      return rows[0]!.result;
    },
  };
}

export function supabaseMetricsReader(client: SupabaseClient): MetricsReader {
  return {
    buckets: (query, metrics) =>
      callRpc<MetricBuckets>(client, 'metric_buckets', {
        p_org_id: query.orgId,
        p_entity_type: query.entityType,
        p_entity_id: query.entityId,
        p_metrics: metrics,
        p_from: query.from,
        p_to: query.to,
        p_granularity: query.granularity,
        p_time_zone: query.timeZone,
        p_currency: query.currency ?? null,
      }),
  };
}

/** Metrics that are amounts of money: summed per currency, never across currencies. */
const AMOUNTS = new Set(['spend', 'conversion_value']);

export async function queryMetrics(reader: MetricsReader, query: MetricsQuery): Promise<MetricPoint[]> {
  const needed = new Set<string>();
  for (const name of query.metrics) {
    const ratio = DERIVED_METRICS.get(name);
    if (ratio) ratio.forEach((part) => needed.add(part));
    else needed.add(name);
  }
  const result = await reader.buckets(query, [...needed]);
  if (result.refused) throw refusal(result.refused, query);
  const { currencies, rows } = result;
  if (query.currency === undefined && currencies.length > 1 && [...needed].some((name) => AMOUNTS.has(name))) {
    // codes in order, then the amounts without one
    const names = [...currencies.filter(Boolean).sort(), ...(currencies.includes('') ? [NO_CURRENCY] : [])];
    throw new PreciseError('validation_failed', `amounts in several currencies (${names.join(', ')}): choose one with currency=`, {
      field: 'currency',
      currencies: names,
    });
  }

  const buckets = new Map<string, Map<string, number>>();
  for (const [localBucket, offsetMinutes, metric, value] of rows) {
    const bucket = `${localBucket}${formatOffset(offsetMinutes)}`;
    if (!buckets.has(bucket)) buckets.set(bucket, new Map());
    if (metric) buckets.get(bucket)!.set(metric, Number(value));
  }
  const points: MetricPoint[] = [];
  for (const [bucket, values] of buckets) {
    for (const name of query.metrics) {
      const ratio = DERIVED_METRICS.get(name);
      if (ratio) {
        const denominator = values.get(ratio[1]) ?? 0;
        points.push({ bucket, metric: name, value: denominator === 0 ? null : (values.get(ratio[0]) ?? 0) / denominator });
      } else {
        points.push({ bucket, metric: name, value: values.get(name) ?? 0 });
      }
    }
  }
  return points;
}

function refusal(field: 'entity_id' | 'tz', query: MetricsQuery): PreciseError {
  if (field === 'entity_id') {
    return new PreciseError('not_found', `no ${query.entityType} ${quoted(query.entityId)} for this organization`, { field });
  }
  return new PreciseError('validation_failed', `unknown time zone ${quoted(query.timeZone)} (the database does not know it)`, { field });
}

function formatOffset(minutes: number): string {
  const sign = minutes < 0 ? '-' : '+';
  const abs = Math.abs(minutes);
  return `${sign}${String(Math.floor(abs / 60)).padStart(2, '0')}:${String(abs % 60).padStart(2, '0')}`;
}
