import type { Queryable } from './db/port.ts';
import { PreciseError } from './errors.ts';

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
export const DERIVED_METRICS: Record<string, [string, string]> = {
  ctr: ['clicks', 'impressions'],
  cvr: ['conversions', 'clicks'],
  cpa: ['spend', 'conversions'],
  roas: ['conversion_value', 'spend'],
};

export const GRANULARITIES = ['hour', 'day', 'week', 'month'] as const;
export type Granularity = (typeof GRANULARITIES)[number];

export interface MetricsQuery {
  orgId: string;
  metrics: string[];
  entityType: string;
  entityId: string;
  from: string;
  to: string;
  granularity: Granularity;
  timeZone: string;
  currency?: string;
}

export interface MetricPoint {
  bucket: string;
  metric: string;
  value: number | null;
}

export function validateMetricNames(names: string[]): void {
  for (const name of names) {
    if (!(STORED_METRICS as readonly string[]).includes(name) && !(name in DERIVED_METRICS)) {
      throw new PreciseError(
        'validation_failed',
        `unknown metric ${name} (known: ${[...STORED_METRICS, ...Object.keys(DERIVED_METRICS)].join(', ')})`,
        { field: 'metric' },
      );
    }
  }
}

export function validateTimeZone(timeZone: string): void {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone });
  } catch {
    throw new PreciseError('validation_failed', `unknown time zone ${timeZone} (an IANA name, e.g. Asia/Kathmandu)`, { field: 'tz' });
  }
}

/** A local bucket, its UTC offset in minutes, and a summed metric (or none: an empty bucket). */
export type BucketRow = [localBucket: string, offsetMinutes: number, metric: string | null, value: string | null];

/** What public.metric_buckets answers: the rows, and the currencies of the amounts summed. */
export interface MetricBuckets {
  currencies: string[];
  rows: BucketRow[];
}

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

/** Metrics that are amounts of money: summed per currency, never across currencies. */
const AMOUNTS = new Set(['spend', 'conversion_value']);

export async function queryMetrics(reader: MetricsReader, query: MetricsQuery): Promise<MetricPoint[]> {
  const needed = new Set<string>();
  for (const name of query.metrics) {
    const ratio = DERIVED_METRICS[name];
    if (ratio) ratio.forEach((part) => needed.add(part));
    else needed.add(name);
  }
  const { currencies, rows } = await reader.buckets(query, [...needed]);
  if (!query.currency && currencies.length > 1 && [...needed].some((name) => AMOUNTS.has(name))) {
    throw new PreciseError(
      'validation_failed',
      `amounts in several currencies (${currencies.join(', ')}): choose one with currency=`,
      { field: 'currency' },
    );
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
      const ratio = DERIVED_METRICS[name];
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

function formatOffset(minutes: number): string {
  const sign = minutes < 0 ? '-' : '+';
  const abs = Math.abs(minutes);
  return `${sign}${String(Math.floor(abs / 60)).padStart(2, '0')}:${String(abs % 60).padStart(2, '0')}`;
}
