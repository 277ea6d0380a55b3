/**
 * Exact sums of rule-model credits, for the metrics (pure, no I/O).
 *
 * A conversion's credit per model and dimension is stored as whole numbers of 10^-12: the
 * channels' shares are rounded by largest remainder, so that they sum to exactly 1. Sums of
 * integers (and of integers times decimal amounts) are exact, so the job can add a chunk's credits
 * per metric point itself and a withdrawal (the same integers negated) cancels to zero.
 */

export const CREDIT_DECIMALS = 12;
const ONE = 10n ** BigInt(CREDIT_DECIMALS);

/**
 * Shares that sum to 1 (up to floating-point error) as whole numbers of 10^-12 that sum to
 * exactly 10^12: each share rounded down, the units left over given one each to the largest
 * remainders (ties by the order given). Shares at or below zero get none.
 */
export function toCreditUnits(shares: ReadonlyMap<string, number>): Map<string, bigint> {
  const entries = [...shares].filter(([, share]) => share > 0);
  const scale = Number(ONE);
  const floors = entries.map(([key, share]) => {
    const scaled = share * scale;
    const whole = Math.floor(scaled);
    return { key, whole, rest: scaled - whole };
  });
  let left = scale - floors.reduce((sum, f) => sum + f.whole, 0);
  const byRest = [...floors].sort((a, b) => b.rest - a.rest);
  for (let i = 0; left > 0 && byRest.length > 0; i = (i + 1) % byRest.length, left -= 1) byRest[i]!.whole += 1;
  // shares summing above 1 by rounding: take the excess from the smallest remainders
  for (let i = byRest.length - 1; left < 0 && byRest.length > 0; i = (i - 1 + byRest.length) % byRest.length) {
    if (byRest[i]!.whole > 0) {
      byRest[i]!.whole -= 1;
      left += 1;
    }
  }
  return new Map(floors.filter((f) => f.whole !== 0).map((f) => [f.key, BigInt(f.whole)]));
}

/** An exact decimal: n × 10^-scale. */
interface Decimal {
  n: bigint;
  scale: number;
}

const DECIMAL = /^(-?)(\d+)(?:\.(\d+))?$/;

/** A decimal as Postgres writes numeric::text (no exponent); throws on anything else. */
export function parseDecimal(text: string): Decimal {
  const match = DECIMAL.exec(text);
  if (!match) throw new Error(`not a decimal: ${text.slice(0, 40)}`);
  const fraction = match[3] ?? '';
  const n = BigInt(match[2]! + fraction);
  return { n: match[1] ? -n : n, scale: fraction.length };
}

function addDecimal(a: Decimal, b: Decimal): Decimal {
  const scale = Math.max(a.scale, b.scale);
  return { n: a.n * 10n ** BigInt(scale - a.scale) + b.n * 10n ** BigInt(scale - b.scale), scale };
}

/** A decimal's exact text, trailing zeros of the fraction removed. */
export function formatDecimal({ n, scale }: Decimal): string {
  const digits = (n < 0n ? -n : n).toString().padStart(scale + 1, '0');
  const whole = digits.slice(0, digits.length - scale);
  const fraction = digits.slice(digits.length - scale).replace(/0+$/, '');
  return `${n < 0n ? '-' : ''}${whole}${fraction ? `.${fraction}` : ''}`;
}

/** One metric point's credit: its series (organization, dimension, channel, model, currency) and bucket. */
export interface PointKey {
  org: string;
  /** the 15-minute bucket's start, ISO 8601 */
  bucket: string;
  currency: string | null;
  dimension: string;
  channel: string;
  model: string;
}

interface PointSum extends PointKey {
  units: bigint;
  value: Decimal | null;
}

/** A chunk's credits summed per point, exactly. */
export class CreditPoints {
  private readonly sums = new Map<string, PointSum>();

  /** Adds `units` of credit (negative to take away), and units × amount to the value when there is an amount. */
  add(key: PointKey, units: bigint, amount: string | null) {
    const id = JSON.stringify([key.org, key.bucket, key.currency, key.dimension, key.channel, key.model]);
    let sum = this.sums.get(id);
    if (!sum) this.sums.set(id, (sum = { ...key, units: 0n, value: null }));
    sum.units += units;
    if (amount !== null) {
      const parsed = parseDecimal(amount);
      const product = { n: parsed.n * units, scale: parsed.scale + CREDIT_DECIMALS };
      sum.value = sum.value ? addDecimal(sum.value, product) : product;
    }
  }

  /** The points as parallel arrays, credits and values as exact decimal text (null: no amount). */
  columns() {
    const points = [...this.sums.values()];
    return {
      orgs: points.map((p) => p.org),
      buckets: points.map((p) => p.bucket),
      currencies: points.map((p) => p.currency),
      dimensions: points.map((p) => p.dimension),
      channels: points.map((p) => p.channel),
      models: points.map((p) => p.model),
      conversions: points.map((p) => formatDecimal({ n: p.units, scale: CREDIT_DECIMALS })),
      values: points.map((p) => (p.value ? formatDecimal(p.value) : null)),
    };
  }

  get size() {
    return this.sums.size;
  }
}

const BUCKET_MS = 15 * 60_000;

/** The start of the 15-minute bucket (from the epoch, as date_bin from 2000-01-01) holding a time in epoch ms. */
export function bucketOf(ms: number): string {
  return new Date(Math.floor(ms / BUCKET_MS) * BUCKET_MS).toISOString();
}
