import type { Queryable } from './db/port.ts';
import { PreciseError } from './errors.ts';

/**
 * Reading metrics: sums of the stored 15-minute rows into hours, days, weeks or months of any
 * IANA time zone (exact, since every zone's offset is a multiple of 15 minutes), and ratios
 * computed from the summed counters, never averaged.
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

export async function queryMetrics(db: Queryable, query: MetricsQuery): Promise<MetricPoint[]> {
  const needed = new Set<string>();
  for (const name of query.metrics) {
    const ratio = DERIVED_METRICS[name];
    if (ratio) ratio.forEach((part) => needed.add(part));
    else needed.add(name);
  }
  // Every local bucket from `from` to `to`, empty ones too (a series a chart can draw), stepped
  // in local wall time so that days stay days across daylight-saving changes.
  const { rows } = await db.query<{ local_bucket: string; offset_minutes: number; metric: string | null; value: string | null }>(
    `with series as (
       select generate_series(
                date_trunc($7, $5::timestamptz at time zone $6),
                ($8::timestamptz at time zone $6) - interval '1 microsecond',
                ('1 ' || $7)::interval) as local_bucket
     ),
     summed as (
       select date_trunc($7, p.bucket_start at time zone $6) as local_bucket, s.metric, sum(p.value) as value
       from public.metric_series s
       join public.metric_points p on p.org_id = s.org_id and p.series_id = s.id
       where s.org_id = $1 and s.entity_type = $2 and s.entity_id = $3 and s.granularity = '15m'
         and s.metric = any ($4::text[])
         and ($9::text is null or s.dimensions ->> 'currency' = $9 or not (s.dimensions ? 'currency'))
         and p.bucket_start >= $5::timestamptz and p.bucket_start < $8::timestamptz
       group by 1, 2
     )
     select to_char(s.local_bucket, 'YYYY-MM-DD"T"HH24:MI:SS') as local_bucket,
            (extract(epoch from s.local_bucket - ((s.local_bucket at time zone $6) at time zone 'UTC')) / 60)::int as offset_minutes,
            v.metric, v.value::text as value
     from series s
     left join summed v on v.local_bucket = s.local_bucket
     order by s.local_bucket, v.metric`,
    [query.orgId, query.entityType, query.entityId, [...needed], query.from, query.timeZone, query.granularity, query.to, query.currency ?? null],
  );

  const buckets = new Map<string, Map<string, number>>();
  for (const row of rows) {
    const bucket = `${row.local_bucket}${formatOffset(row.offset_minutes)}`;
    if (!buckets.has(bucket)) buckets.set(bucket, new Map());
    if (row.metric) buckets.get(bucket)!.set(row.metric, Number(row.value));
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
