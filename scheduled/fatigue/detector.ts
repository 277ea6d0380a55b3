/**
 * Creative fatigue: the statistics (issue 13). Pure, no I/O: the creative-fatigue job reads the
 * rollup's daily impressions and clicks per creative and hands them here; this module says, per
 * creative and day, whether its click-through rate has dropped, with the figures behind it.
 *
 * Use
 *   parseFatigueSettings(campaign.properties)          settings, or a validation_failed error naming the field
 *   stepCampaign(state, day, counts, settings)         one day of a campaign from the state after the day before:
 *                                                      { state, verdicts }; keep the state (JSON) per campaign and day,
 *                                                      and when late data change day D, step again from the state after D − 1
 *   scoreCampaign(series, settings, asOf)              the same from scratch, with each creative's daily series
 *   exposureCurve(counts by exposure, { openLast })    CTR at the 1st, 2nd, … impression of a user, and the exposure at
 *                                                      which it halves (a quasi-Poisson fit), or why there is none
 *
 * Method, per creative and day
 * - Baseline and recent week. The recent week is the last 7 days (whole weeks, so weekday
 *   patterns cancel); the baseline is every earlier day since the first impression. A day
 *   leaving the recent week joins the baseline, unless the creative then shows a drop (an alarm
 *   or an early signal), so a wearing-out creative is not compared with its own decline.
 *   No verdict (insufficient_data) before the baseline has 7 days, `minImpressions` (5,000) and
 *   25 clicks, nor while the recent week is expected to bring fewer than 5 clicks.
 * - The statistic: the exact conditional test of two Poisson rates (given all clicks, the recent
 *   ones are binomial with the recent share of impressions), its one-sided p-value as a z-score.
 *   Exact, so a quiet creative's false alarms are bounded too (discreteness only makes it more
 *   conservative). The drop has Katz's 95 % log-ratio interval.
 * - False alarms. `falseAlarmRate` (5 %) is the probability that a creative whose CTR never
 *   changes is ever flagged fatigued in its first 30 days of verdicts, each creative on its own,
 *   so of N unchanged creatives about N × 5 % are flagged in a month: the control is per creative
 *   (a family-wise rate over its 30 daily looks), which is what a buyer acting on one creative
 *   needs. The daily statistics overlap, so the alarm level z* is the 95 % quantile of their
 *   maximum, simulated once in its Gaussian limit (`alarmThreshold`): z* = 2.83 against 1.64
 *   for a single look and 2.94 for Bonferroni over 30. After the first 30 days false alarms keep
 *   coming at about the same pace (4.5 %, 8.6 %, 12.5 % by 30, 60, 90 days at 20 clicks a day).
 * - fatigued: z ≥ z* and the drop's interval reaches `minDrop` (20 %), so a small but very
 *   well-measured drop is only watched. The alarm then holds while z ≥ 1.64 (no flicker).
 * - market_shift: with three or more creatives measured, the campaign's level is the median of
 *   their recent/baseline ratios (this creative included), over the recent week and over the
 *   latest 3 days. An alarm whose creative is nearer that level than the level is to no change
 *   (in standard errors) moved with its campaign: market_shift, unless it also dropped against
 *   the campaign's level by the same alarm rule (then fatigued). The median moves only when most
 *   creatives move: two thirds carry it, one or two fatigued creatives do not.
 * - watch: past `creative_fatigue_threshold` cumulative impressions, or an early signal
 *   (z ≥ 1.64 with `minDrop` in the interval). healthy otherwise. The score is z / z* (against
 *   the campaign's level in a market shift).
 *
 * Measured (seeded simulations, tests/unit/fatigue-detector.test.ts; the table with
 * FATIGUE_TABLE=2000): 2 % CTR, constant daily impressions, binomial clicks; the drop starts 8
 * days after the first verdict; a creative alone in its campaign; 2,000 creatives a cell.
 * "≤ 7 d" is flagged fatigued within 7 days of the drop's end (sudden: the drop's day; gradual:
 * a linear decline over 7 days); the delay is from the drop's end (−1: during the decline).
 *
 *   impressions  clicks  false alarms  sudden 30 % drop              gradual 30 % drop (a week)
 *   a day        a day   in 30 days    ≤ 7 d  ≤ 14 d  ≤ 28 d  median  ≤ 7 d  ≤ 14 d  ≤ 28 d  median
 *      100          2        2.5 %        6 %    12 %    23 %   > 60     8 %    14 %    22 %   > 60
 *      250          5        3.3 %       20 %    37 %    56 %     24    25 %    40 %    59 %     21
 *      500         10        3.5 %       42 %    65 %    83 %     10    50 %    70 %    85 %      8
 *    1,000         20        4.5 %       76 %    94 %    99 %      5    87 %    96 %    99 %      3
 *    1,500         30        4.5 %       93 %    99 %   100 %      5    97 %   100 %   100 %      1
 *    2,000         40        4.6 %       98 %   100 %   100 %      4   100 %   100 %   100 %      1
 *    5,000        100        2.4 %      100 %   100 %   100 %      2   100 %   100 %   100 %     −1
 *
 * Detection stops being practical below about 5 clicks a day: half the drops are seen within 4
 * weeks; at 2 clicks a day (and the first verdict only on day 56, after 5,000 impressions) a 30 %
 * drop is mostly invisible. At 5,000 a day false alarms fall because noise no longer reaches a
 * 20 % drop. The target, 90 % within 7 days at 20 clicks a day with ≤ 5 % false alarms,
 * is met from about 30 clicks a day; at 20 it takes 14 days (94 %). At 20 clicks a day a drop of
 * 30 % moves the weekly test by about 3 standard errors against z* = 2.83; even with the baseline
 * CTR known exactly the same test would flag about 92 % within 7 days: the rest of the gap is the
 * baseline's own noise (280–420 clicks), which no test can avoid.
 * Sequential tests do not close that gap (measured apart from the tests: Poisson clicks at 20 a day,
 * the same baseline rules, each threshold calibrated to 5 % over 30 days at that very volume,
 * 3,000–6,000 creatives; sudden / gradual within 7 days): this 7-day test 77 % / 86 %; a
 * standardised CUSUM on the plug-in baseline 37–70 % / 68–83 % (reference 0.25–0.75 sd a day); a
 * GLR for a fixed drop (20 % or 30 %) with the baseline CTR profiled out, maximised over change
 * points in the last 14 days, 75–76 % / 81–85 %; Shiryaev–Roberts on that likelihood ratio (20 %)
 * 77–79 % / 88 %; the best z over segments of 1–14 days 75 % / 80 %. With 8 days of data after a
 * sudden drop, the week already holds 7 of them: accumulating more gains nothing by the deadline,
 * and the 30 looks cost every method alike (one look at a known change day would reach 94 %). What
 * helps is a longer baseline: 3 weeks of it before the first verdict (the first verdict on day 28,
 * not 14; the drop still 8 days later) gives 85 % / 91 %, at the cost of two more silent weeks.
 * Campaigns of six at 2,000 a day: a drop shared by four is market_shift at the week's end for
 * 97 % of them (4 % were fatigued for a day or two before the campaign's drop showed); a drop of
 * one alone is fatigued for 95 % (3 % market_shift).
 */
import { PreciseError } from '../../core/errors.ts';

// ---------------------------------------------------------------------------------------------
// Types and settings

export const FATIGUE_STATUSES = ['healthy', 'watch', 'fatigued', 'market_shift', 'insufficient_data'] as const;
export type FatigueStatus = (typeof FATIGUE_STATUSES)[number];

export interface DayCounts {
  impressions: number;
  clicks: number;
}
export interface DailyCounts extends DayCounts {
  /** YYYY-MM-DD, in the campaign's time zone (the job's business) */
  day: string;
}

export interface FatigueSettings {
  /** the smallest relative CTR drop that matters: 0.2 = 20 % */
  minDrop: number;
  /** impressions the baseline must hold before any verdict */
  minImpressions: number;
  /** the probability that a creative whose CTR never changes is flagged `fatigued` in its first 30 days of verdicts */
  falseAlarmRate: number;
  /** cumulative impressions past which a creative is at least `watch` (campaign property creative_fatigue_threshold) */
  cumulativeThreshold: number | null;
}

export const DEFAULT_FATIGUE_SETTINGS: Readonly<FatigueSettings> = Object.freeze({
  minDrop: 0.2,
  minImpressions: 5000,
  falseAlarmRate: 0.05,
  cumulativeThreshold: null,
});

/** The recent window: the last 7 days (a whole week, so weekday patterns cancel). */
export const RECENT_DAYS = 7;
/** The baseline holds at least this many days (older than the recent week) before any verdict. */
export const MIN_BASELINE_DAYS = 7;
/** ... and at least this many clicks: below it the baseline CTR is too uncertain to compare with. */
export const MIN_BASELINE_CLICKS = 25;
/** A recent week expected (at the baseline CTR) to bring fewer clicks than this is too quiet to judge. */
export const MIN_RECENT_EXPECTED_CLICKS = 5;
/** The horizon over which `falseAlarmRate` is spent: the first 30 days of verdicts. */
export const HORIZON_DAYS = 30;
/** One-sided 5 %: the early-signal level of `watch`, and the level an alarm must stay above to persist. */
export const WATCH_Z = 1.6448536269514722;
/** Creatives measured (this one included) needed to tell a market shift from fatigue. */
export const MIN_MARKET_CREATIVES = 3;
/** The latest days, on which a sudden shift of the whole campaign shows before it fills the recent week. */
export const LATEST_DAYS = 3;
const Z95 = 1.959963984540054;

const FATIGUE_KEYS = ['min_drop', 'min_impressions', 'false_alarm_rate'] as const;

/**
 * The settings of a campaign from its properties: `creative_fatigue_threshold` (cumulative
 * impressions, optional) and an optional `fatigue` object `{ min_drop, min_impressions,
 * false_alarm_rate }`; what is absent takes its default. Throws a `validation_failed`
 * PreciseError naming the offending field.
 */
export function parseFatigueSettings(properties: unknown): FatigueSettings {
  const settings: FatigueSettings = { ...DEFAULT_FATIGUE_SETTINGS };
  if (properties === null || properties === undefined) return settings;
  if (!isPlainObject(properties)) invalid('properties', 'campaign properties must be a JSON object');
  const threshold = properties.creative_fatigue_threshold;
  if (threshold !== undefined && threshold !== null) {
    if (typeof threshold !== 'number' || !Number.isFinite(threshold) || threshold <= 0) {
      invalid('properties.creative_fatigue_threshold', `creative_fatigue_threshold must be a positive number of impressions (got ${describe(threshold)})`);
    }
    settings.cumulativeThreshold = threshold;
  }
  const fatigue = properties.fatigue;
  if (fatigue === undefined || fatigue === null) return settings;
  if (!isPlainObject(fatigue)) invalid('properties.fatigue', `fatigue must be an object { ${FATIGUE_KEYS.join(', ')} } (got ${describe(fatigue)})`);
  for (const key of Object.keys(fatigue)) {
    if (!(FATIGUE_KEYS as readonly string[]).includes(key)) {
      invalid(`properties.fatigue.${key}`, `unknown fatigue setting ${key} (known: ${FATIGUE_KEYS.join(', ')})`);
    }
  }
  if (fatigue.min_drop !== undefined) {
    const rule = 'min_drop is a fraction: more than 0 and less than 1 (0.2 = 20 %)';
    settings.minDrop = numberIn(fatigue.min_drop, 'properties.fatigue.min_drop', rule, (v) => v > 0 && v < 1);
  }
  if (fatigue.min_impressions !== undefined) {
    const rule = 'min_impressions is a whole number of impressions, 0 or more';
    settings.minImpressions = numberIn(fatigue.min_impressions, 'properties.fatigue.min_impressions', rule, (v) => Number.isInteger(v) && v >= 0);
  }
  if (fatigue.false_alarm_rate !== undefined) {
    const rule = 'false_alarm_rate is a probability from 0.001 to 0.5';
    settings.falseAlarmRate = numberIn(fatigue.false_alarm_rate, 'properties.fatigue.false_alarm_rate', rule, (v) => v >= 0.001 && v <= 0.5);
  }
  return settings;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function numberIn(value: unknown, field: string, rule: string, ok: (value: number) => boolean): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || !ok(value)) invalid(field, `${rule} (got ${describe(value)})`);
  return value;
}

function describe(value: unknown): string {
  return JSON.stringify(value) ?? String(value);
}

function invalid(field: string, message: string): never {
  throw new PreciseError('validation_failed', message, { field });
}

// ---------------------------------------------------------------------------------------------
// Distributions

const LANCZOS = [
  0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313, -176.61502916214059, 12.507343278686905, -0.13857109526572012,
  9.9843695780195716e-6, 1.5056327351493116e-7,
];

/** ln Γ(x) for x > 0 (Lanczos, g = 7; about 15 significant digits). */
export function lnGamma(x: number): number {
  if (x < 0.5) return Math.log(Math.PI / Math.abs(Math.sin(Math.PI * x))) - lnGamma(1 - x);
  const y = x - 1;
  let sum = LANCZOS[0]!;
  for (let i = 1; i < LANCZOS.length; i++) sum += LANCZOS[i]! / (y + i);
  const t = y + 7.5;
  return 0.5 * Math.log(2 * Math.PI) + (y + 0.5) * Math.log(t) - t + Math.log(sum);
}

/** The continued fraction of the incomplete beta function (modified Lentz). */
function betaFraction(a: number, b: number, x: number): number {
  const tiny = 1e-300;
  let c = 1;
  let d = 1 - ((a + b) * x) / (a + 1);
  if (Math.abs(d) < tiny) d = tiny;
  d = 1 / d;
  let h = d;
  for (let m = 1; m <= 100_000; m++) {
    const m2 = 2 * m;
    let term = (m * (b - m) * x) / ((a - 1 + m2) * (a + m2));
    d = 1 + term * d;
    c = 1 + term / c;
    d = 1 / (Math.abs(d) < tiny ? tiny : d);
    c = Math.abs(c) < tiny ? tiny : c;
    h *= d * c;
    term = (-(a + m) * (a + b + m) * x) / ((a + m2) * (a + 1 + m2));
    d = 1 + term * d;
    c = 1 + term / c;
    d = 1 / (Math.abs(d) < tiny ? tiny : d);
    c = Math.abs(c) < tiny ? tiny : c;
    const step = d * c;
    h *= step;
    if (Math.abs(step - 1) < 1e-15) break;
  }
  return h;
}

/** The regularized incomplete beta function I_x(a, b). */
export function regularizedBeta(x: number, a: number, b: number): number {
  if (x <= 0) return 0;
  if (x >= 1) return 1;
  const front = Math.exp(lnGamma(a + b) - lnGamma(a) - lnGamma(b) + a * Math.log(x) + b * Math.log1p(-x));
  if (x < (a + 1) / (a + b + 2)) return (front * betaFraction(a, b, x)) / a;
  return 1 - (front * betaFraction(b, a, 1 - x)) / b;
}

/** P(X ≤ k) for X ~ Binomial(n, p). */
export function binomialCdf(k: number, n: number, p: number): number {
  if (k < 0) return 0;
  if (k >= n) return 1;
  if (p <= 0) return 1;
  if (p >= 1) return 0;
  return regularizedBeta(1 - p, n - k, k + 1);
}

/** The regularized lower incomplete gamma function P(a, x) by its series (for x < a + 1). */
function gammaSeries(a: number, x: number): number {
  let term = 1 / a;
  let sum = term;
  for (let n = 1; n < 10_000 && Math.abs(term) > Math.abs(sum) * 1e-17; n++) {
    term *= x / (a + n);
    sum += term;
  }
  return sum * Math.exp(-x + a * Math.log(x) - lnGamma(a));
}

/** The regularized upper incomplete gamma function Q(a, x) by its continued fraction (for x ≥ a + 1; modified Lentz). */
function gammaFraction(a: number, x: number): number {
  const tiny = 1e-300;
  let b = x + 1 - a;
  let c = 1 / tiny;
  let d = 1 / b;
  let h = d;
  for (let i = 1; i < 10_000; i++) {
    const an = -i * (i - a);
    b += 2;
    d = an * d + b;
    d = 1 / (Math.abs(d) < tiny ? tiny : d);
    c = b + an / c;
    c = Math.abs(c) < tiny ? tiny : c;
    const step = d * c;
    h *= step;
    if (Math.abs(step - 1) < 1e-16) break;
  }
  return h * Math.exp(-x + a * Math.log(x) - lnGamma(a));
}

/** Φ(z), the standard normal distribution function, with full relative precision in the tails: Φ(−|z|) = Q(½, z²/2) / 2. */
export function normalCdf(z: number): number {
  const x = (z * z) / 2;
  if (x < 1.5) {
    const half = gammaSeries(0.5, x) / 2;
    return z < 0 ? 0.5 - half : 0.5 + half;
  }
  const tail = gammaFraction(0.5, x) / 2;
  return z < 0 ? tail : 1 - tail;
}

const ACKLAM_A = [-3.969683028665376e1, 2.209460984245205e2, -2.759285104469687e2, 1.38357751867269e2, -3.066479806614716e1, 2.506628277459239];
const ACKLAM_B = [-5.447609879822406e1, 1.615858368580409e2, -1.556989798598866e2, 6.680131188771972e1, -1.328068155288572e1];
const ACKLAM_C = [-7.784894002430293e-3, -3.223964580411365e-1, -2.400758277161838, -2.549732539343734, 4.374664141464968, 2.938163982698783];
const ACKLAM_D = [7.784695709041462e-3, 3.224671290700398e-1, 2.445134137142996, 3.754408661907416];

/** Φ⁻¹(p): Acklam's rational approximation polished by one Halley step (full double precision). */
export function normalQuantile(p: number): number {
  if (!(p > 0 && p < 1)) {
    if (p === 0) return -Infinity;
    if (p === 1) return Infinity;
    throw new RangeError(`normalQuantile needs a probability, got ${p}`);
  }
  const poly = (coefficients: readonly number[], x: number) => coefficients.reduce((sum, c) => sum * x + c, 0);
  let x: number;
  if (p < 0.02425) {
    const q = Math.sqrt(-2 * Math.log(p));
    x = poly(ACKLAM_C, q) / (poly(ACKLAM_D, q) * q + 1);
  } else if (p > 1 - 0.02425) {
    const q = Math.sqrt(-2 * Math.log1p(-p));
    x = -poly(ACKLAM_C, q) / (poly(ACKLAM_D, q) * q + 1);
  } else {
    const q = p - 0.5;
    const r = q * q;
    x = (poly(ACKLAM_A, r) * q) / (poly(ACKLAM_B, r) * r + 1);
  }
  const error = normalCdf(x) - p;
  const u = error * Math.sqrt(2 * Math.PI) * Math.exp((x * x) / 2);
  return x - u / (1 + (x * u) / 2);
}

/** The z of a one-sided p-value, capped where p underflows. */
function zOfP(p: number): number {
  if (p <= 1e-300) return 37;
  if (p >= 1) return -37;
  return -normalQuantile(p);
}

/** Wilson's 95 % interval for a proportion. */
export function wilsonInterval(successes: number, trials: number): { low: number; high: number } | null {
  if (trials <= 0) return null;
  const p = successes / trials;
  const z2 = Z95 * Z95;
  const centre = (p + z2 / (2 * trials)) / (1 + z2 / trials);
  const half = (Z95 * Math.sqrt((p * (1 - p)) / trials + z2 / (4 * trials * trials))) / (1 + z2 / trials);
  return { low: Math.max(0, centre - half), high: Math.min(1, centre + half) };
}

// ---------------------------------------------------------------------------------------------
// The alarm threshold

/** mulberry32: a tiny 32-bit generator, uniform in [0, 1); seeded so the threshold is the same everywhere. */
function mulberry32(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface ThresholdDesign {
  /** daily verdicts the false-alarm rate covers */
  looks: number;
  /** baseline days at the first verdict */
  baselineDays: number;
  /** days of the recent window */
  recentDays: number;
  /** simulated creatives */
  paths: number;
  seed: number;
}
export const DEFAULT_THRESHOLD_DESIGN: Readonly<ThresholdDesign> = Object.freeze({
  looks: HORIZON_DAYS,
  baselineDays: MIN_BASELINE_DAYS,
  recentDays: RECENT_DAYS,
  paths: 100_000,
  seed: 13,
});

const thresholds = new Map<string, number>();

/**
 * The per-day alarm level z* of the drop statistic such that a creative whose CTR never changes
 * crosses it on at least one of its first `looks` daily verdicts with probability
 * `falseAlarmRate`. The statistic of a day is a z-score of the recent week against all earlier
 * days; at large volumes these z-scores are Gaussian, and their joint law depends only on the
 * window and baseline lengths (the days overlap, the baseline is shared), not on the volume or
 * the CTR. So z* is the (1 − rate) quantile of the maximum of that Gaussian process, simulated
 * once per rate with a fixed seed (100,000 creatives: about ±0.01 on z*), with the detector's rule
 * that a day leaving the recent week during an early signal stays out of the baseline (that rule
 * keeps a high baseline high, so it costs some false alarms, and z* pays for them). At low
 * volumes the exact test is discrete and more conservative than the Gaussian limit.
 */
export function alarmThreshold(falseAlarmRate: number, design: Partial<ThresholdDesign> = {}): number {
  const d = { ...DEFAULT_THRESHOLD_DESIGN, ...design };
  if (!(falseAlarmRate > 0 && falseAlarmRate < 1)) throw new RangeError(`falseAlarmRate must be in (0, 1), got ${falseAlarmRate}`);
  const key = `${falseAlarmRate}|${d.looks}|${d.baselineDays}|${d.recentDays}|${d.paths}|${d.seed}`;
  let threshold = thresholds.get(key);
  if (threshold === undefined) {
    const maxima = simulateNullMaxima(d);
    maxima.sort();
    threshold = maxima[Math.min(d.paths - 1, Math.ceil((1 - falseAlarmRate) * d.paths) - 1)]!;
    thresholds.set(key, threshold);
  }
  return threshold;
}

/**
 * The largest drop z-score over the first `looks` verdicts of each of `paths` unchanged creatives
 * (Gaussian limit: each day a standard normal deviation of its clicks). The baseline grows as the
 * detector's does, and, as there, a day leaving the recent week while the statistic is above
 * WATCH_Z stays out of it.
 */
function simulateNullMaxima(d: ThresholdDesign): Float64Array {
  const random = mulberry32(d.seed);
  const days = d.baselineDays + d.recentDays - 1 + d.looks;
  const deviations = new Float64Array(days + 1);
  const maxima = new Float64Array(d.paths);
  for (let path = 0; path < d.paths; path++) {
    for (let day = 0; day < days; day += 2) {
      // Box–Muller: two standard normal days per pair of uniforms
      const radius = Math.sqrt(-2 * Math.log(1 - random()));
      const angle = 2 * Math.PI * random();
      deviations[day] = radius * Math.cos(angle);
      deviations[day + 1] = radius * Math.sin(angle);
    }
    let baselineSum = 0;
    for (let day = 0; day < d.baselineDays; day++) baselineSum += deviations[day]!;
    let baselineDays = d.baselineDays;
    let recentSum = 0;
    for (let day = d.baselineDays; day < d.baselineDays + d.recentDays; day++) recentSum += deviations[day]!;
    let max = -Infinity;
    for (let look = 0; ; look++) {
      const z = (baselineSum / baselineDays - recentSum / d.recentDays) / Math.sqrt(1 / d.recentDays + 1 / baselineDays);
      if (z > max) max = z;
      if (look === d.looks - 1) break;
      const leaving = deviations[d.baselineDays + look]!;
      recentSum += deviations[d.baselineDays + d.recentDays + look]! - leaving;
      if (z < WATCH_Z) {
        baselineSum += leaving;
        baselineDays += 1;
      }
    }
    maxima[path] = max;
  }
  return maxima;
}

// ---------------------------------------------------------------------------------------------
// The drop test: the recent week against the baseline

export interface Interval {
  estimate: number;
  low: number;
  high: number;
}

export interface DropTest {
  /** recent CTR / baseline CTR, with its 95 % interval (Katz log ratio) */
  ratio: Interval;
  /** 1 − ratio: the relative drop, with its 95 % interval */
  drop: Interval;
  /** standard error of ln(ratio) */
  logRatioSe: number;
  /** one-sided p-value of the exact conditional test: recent clicks this low if the CTR had not changed */
  pValue: number;
  /** the p-value as a z-score: the drop statistic compared with the alarm threshold */
  statistic: number;
}

/**
 * The exact conditional test of two Poisson rates: given all clicks of the baseline and the recent
 * week, the recent ones are Binomial(total, recent share of impressions) when the CTR has not
 * changed. With clicks rare among impressions this is the binomial comparison of two CTRs; when
 * CTRs are large it is conservative. The interval is Katz's log-ratio interval (0.5 added to
 * empty counts).
 */
export function dropTest(baseline: DayCounts, recent: DayCounts): DropTest | null {
  if (baseline.impressions <= 0 || recent.impressions <= 0) return null;
  const total = baseline.clicks + recent.clicks;
  const share = recent.impressions / (recent.impressions + baseline.impressions);
  const pValue = binomialCdf(recent.clicks, total, share);
  const ratio = logRatioInterval(recent.clicks, recent.impressions, baseline.clicks, baseline.impressions);
  return {
    ratio: ratio.interval,
    drop: dropOf(ratio.interval),
    logRatioSe: ratio.se,
    pValue,
    statistic: zOfP(pValue),
  };
}

function logRatioInterval(clicksA: number, impressionsA: number, clicksB: number, impressionsB: number) {
  const empty = clicksA === 0 || clicksB === 0 ? 0.5 : 0;
  const a = clicksA + empty;
  const b = clicksB + empty;
  const logRatio = Math.log(a / impressionsA) - Math.log(b / impressionsB);
  const se = Math.sqrt(Math.max(0, 1 / a + 1 / b - 1 / impressionsA - 1 / impressionsB));
  return {
    se,
    interval: { estimate: Math.exp(logRatio), low: Math.exp(logRatio - Z95 * se), high: Math.exp(logRatio + Z95 * se) },
  };
}

function intervalOf(level: Level): Interval {
  return { estimate: Math.exp(level.log), low: Math.exp(level.log - Z95 * level.se), high: Math.exp(level.log + Z95 * level.se) };
}

function dropOf(ratio: Interval): Interval {
  return { estimate: 1 - ratio.estimate, low: 1 - ratio.high, high: 1 - ratio.low };
}

// ---------------------------------------------------------------------------------------------
// State, one day at a time

export interface BaselineCounts extends DayCounts {
  /** days absorbed */
  days: number;
  from: string | null;
  to: string | null;
}

/** What the detector keeps of one creative between days: small, JSON-serialisable. */
export interface CreativeState {
  /** first day with impressions */
  firstDay: string;
  cumulativeImpressions: number;
  cumulativeClicks: number;
  /** every day older than the recent week, except those that left it while the creative showed a drop (`dropSignal`) */
  baseline: BaselineCounts;
  /** the last RECENT_DAYS days, oldest first; a day without counts is a row of zeros */
  recent: DailyCounts[];
  status: FatigueStatus;
  since: string;
  /** the last verdict saw a drop (an early signal or an alarm): days leaving the recent week stay out of the baseline */
  dropSignal: boolean;
}

/** A campaign's state after `lastDay`: what `stepCampaign` needs to score the next day. */
export interface CampaignState {
  lastDay: string | null;
  creatives: Record<string, CreativeState>;
}

/** The creative's CTR ratio over the campaign's level, its drop against it, and that drop's z-score. */
export interface RelativeLevel extends Interval {
  drop: Interval;
  statistic: number;
}

export interface MarketEvidence {
  /** creatives of the campaign measured this day, this one included */
  creatives: number;
  /** the median of their recent-week/baseline CTR ratios: the campaign's common level, with its 95 % interval */
  level: Interval;
  /** the same over the latest LATEST_DAYS days */
  latestLevel: Interval | null;
  /** the campaign's level is nearer this creative's than no change: they moved together */
  shared: boolean;
  /** this creative against the campaign's level, when they moved together */
  relative: RelativeLevel | null;
}

export interface FatigueEvidence {
  baseline: DayCounts & { ctr: number | null; days: number; from: string | null; to: string | null };
  recent: DayCounts & { ctr: number | null; days: number; from: string; to: string };
  /** the relative CTR drop, recent week against baseline, with its 95 % interval */
  drop: Interval | null;
  test: {
    statistic: number;
    pValue: number;
    /** the alarm level of the statistic (the false-alarm rate spent over HORIZON_DAYS verdicts) */
    threshold: number;
    /** the level for an early signal (`watch`), and for an alarm to persist */
    watchThreshold: number;
    falseAlarmRate: number;
    minDrop: number;
  } | null;
  market: MarketEvidence | null;
  cumulative: {
    impressions: number;
    clicks: number;
    threshold: number | null;
    /** the day the threshold will be crossed at the recent week's pace; null when crossed or no pace */
    projectedCrossing: string | null;
  };
}

export interface CreativeVerdict {
  creativeId: string;
  day: string;
  status: FatigueStatus;
  /** the creative's own drop statistic over the alarm threshold (against the campaign's level in a market shift); 0 without a test */
  score: number;
  /** first day of the current status; null for a creative with no impressions yet */
  since: string | null;
  evidence: FatigueEvidence;
}

export function emptyCampaignState(): CampaignState {
  return { lastDay: null, creatives: {} };
}

/**
 * Scores one day of a campaign from its state after the previous day. `counts` holds the day's
 * impressions and clicks per creative (a creative without a row had none). Pure: returns the new
 * state and one verdict per creative that has started (had impressions). Days skipped since
 * `state.lastDay` are stepped as days without counts; a day at or before it is refused (resume
 * from the state kept before it instead).
 */
export function stepCampaign(
  state: CampaignState,
  day: string,
  counts: ReadonlyMap<string, DayCounts> | Readonly<Record<string, DayCounts>>,
  settings: FatigueSettings,
): { state: CampaignState; verdicts: CreativeVerdict[] } {
  checkSettings(settings);
  const dayMs = parseDay(day);
  let current = state;
  if (current.lastDay !== null) {
    const lastMs = parseDay(current.lastDay);
    if (dayMs <= lastMs) throw new RangeError(`day ${day} is not after the state's last day ${current.lastDay}: resume from the state before ${day}`);
    for (let gap = lastMs + DAY_MS; gap < dayMs; gap += DAY_MS) current = advance(current, formatDay(gap), new Map(), settings).state;
  }
  return advance(current, day, counts instanceof Map ? counts : new Map(Object.entries(counts)), settings);
}

function advance(state: CampaignState, day: string, counts: ReadonlyMap<string, DayCounts>, settings: FatigueSettings) {
  for (const [creativeId, c] of counts) checkCounts(creativeId, day, c);
  const threshold = alarmThreshold(settings.falseAlarmRate);
  const rows: Array<{ creativeId: string; creative: CreativeState; recent: DayCounts; test: DropTest | null; latest: Level | null }> = [];
  for (const creativeId of new Set([...Object.keys(state.creatives), ...counts.keys()])) {
    const creative = advanceCreative(state.creatives[creativeId], day, counts.get(creativeId));
    if (!creative) continue;
    const recent = sumRecent(creative);
    const test = testable(creative, recent, settings) ? dropTest(creative.baseline, recent) : null;
    rows.push({ creativeId, creative, recent, test, latest: test && latestLevel(creative) });
  }
  const market = campaignLevels(rows);
  const creatives: Record<string, CreativeState> = {};
  const verdicts: CreativeVerdict[] = [];
  for (const { creativeId, creative, recent, test, latest } of rows) {
    const before = state.creatives[creativeId];
    const previous = before?.status ?? 'insufficient_data';
    const { verdict, dropSignal } = judge(creativeId, day, creative, recent, previous, test, latest, market, settings, threshold);
    creative.status = verdict.status;
    creative.dropSignal = dropSignal;
    creative.since = before && previous === verdict.status ? before.since : day;
    verdict.since = creative.since;
    creatives[creativeId] = creative;
    verdicts.push(verdict);
  }
  return { state: { lastDay: day, creatives }, verdicts };
}

function checkSettings(settings: FatigueSettings) {
  if (!(settings.minDrop > 0 && settings.minDrop < 1)) throw new RangeError(`minDrop must be in (0, 1), got ${settings.minDrop}`);
  if (!(settings.minImpressions >= 0)) throw new RangeError(`minImpressions must be 0 or more, got ${settings.minImpressions}`);
  if (!(settings.falseAlarmRate >= 0.001 && settings.falseAlarmRate <= 0.5)) {
    throw new RangeError(`falseAlarmRate must be from 0.001 to 0.5, got ${settings.falseAlarmRate}`);
  }
  if (settings.cumulativeThreshold !== null && !(settings.cumulativeThreshold > 0)) {
    throw new RangeError(`cumulativeThreshold must be null or positive, got ${settings.cumulativeThreshold}`);
  }
}

function checkCounts(creativeId: string, day: string, c: DayCounts) {
  for (const field of ['impressions', 'clicks'] as const) {
    const value = c[field];
    if (!Number.isInteger(value) || value < 0) {
      throw new RangeError(`${field} of creative ${creativeId} on ${day} must be a whole number, 0 or more (got ${value})`);
    }
  }
}

/** The creative after `day`: the day joins the recent week; the day leaving it joins the baseline unless the creative showed a drop. */
function advanceCreative(previous: CreativeState | undefined, day: string, counts: DayCounts | undefined): CreativeState | undefined {
  const today: DailyCounts = { day, impressions: counts?.impressions ?? 0, clicks: counts?.clicks ?? 0 };
  if (!previous) {
    if (today.impressions === 0) return undefined;
    return {
      firstDay: day,
      cumulativeImpressions: today.impressions,
      cumulativeClicks: today.clicks,
      baseline: { impressions: 0, clicks: 0, days: 0, from: null, to: null },
      recent: [today],
      status: 'insufficient_data',
      since: day,
      dropSignal: false,
    };
  }
  const recent = [...previous.recent, today];
  let baseline = previous.baseline;
  const leaving = recent.length > RECENT_DAYS ? recent.shift()! : null;
  if (leaving && !previous.dropSignal) {
    baseline = {
      impressions: baseline.impressions + leaving.impressions,
      clicks: baseline.clicks + leaving.clicks,
      days: baseline.days + 1,
      from: baseline.from ?? leaving.day,
      to: leaving.day,
    };
  }
  return {
    ...previous,
    cumulativeImpressions: previous.cumulativeImpressions + today.impressions,
    cumulativeClicks: previous.cumulativeClicks + today.clicks,
    baseline,
    recent,
  };
}

function sumRecent(creative: CreativeState): DayCounts {
  let impressions = 0;
  let clicks = 0;
  for (const row of creative.recent) {
    impressions += row.impressions;
    clicks += row.clicks;
  }
  return { impressions, clicks };
}

/** Enough data for a verdict: a baseline of a week, `minImpressions` and MIN_BASELINE_CLICKS, and a recent week that is not too quiet. */
function testable(creative: CreativeState, recent: DayCounts, settings: FatigueSettings): boolean {
  const { baseline } = creative;
  if (baseline.days < MIN_BASELINE_DAYS || baseline.impressions < Math.max(1, settings.minImpressions) || baseline.clicks < MIN_BASELINE_CLICKS) return false;
  const expected = (recent.impressions * baseline.clicks) / baseline.impressions;
  return expected >= MIN_RECENT_EXPECTED_CLICKS;
}

/** A CTR ratio against the baseline on the log scale, with its standard error. */
interface Level {
  log: number;
  se: number;
}

/** The campaign's common levels of one day. */
interface CampaignLevels {
  /** creatives measured this day (with a drop test) */
  creatives: number;
  /** over the recent week */
  week: Level;
  /** over the latest LATEST_DAYS days */
  latest: Level | null;
}

/** The creative's latest LATEST_DAYS against its baseline; null when they had no impressions. */
function latestLevel(creative: CreativeState): Level | null {
  let impressions = 0;
  let clicks = 0;
  for (const row of creative.recent.slice(-LATEST_DAYS)) {
    impressions += row.impressions;
    clicks += row.clicks;
  }
  if (impressions === 0) return null;
  const { interval, se } = logRatioInterval(clicks, impressions, creative.baseline.clicks, creative.baseline.impressions);
  return { log: Math.log(interval.estimate), se };
}

const weekLevel = (test: DropTest): Level => ({ log: Math.log(test.ratio.estimate), se: test.logRatioSe });

/** The campaign's levels, once it has MIN_MARKET_CREATIVES measured creatives. */
function campaignLevels(rows: ReadonlyArray<{ test: DropTest | null; latest: Level | null }>): CampaignLevels | null {
  const week = rows.flatMap(({ test }) => (test ? [weekLevel(test)] : []));
  if (week.length < MIN_MARKET_CREATIVES) return null;
  const latest = rows.flatMap(({ test, latest }) => (test && latest ? [latest] : []));
  return { creatives: week.length, week: medianLevel(week), latest: latest.length >= MIN_MARKET_CREATIVES ? medianLevel(latest) : null };
}

/**
 * The campaign's common level: the median of its creatives' levels (log scale), the creative
 * judged included. A median moves only when most creatives move: a shift shared by two thirds of
 * them carries it, one or two fatigued creatives do not (with three creatives, the middle one:
 * two that dropped together carry it, one alone does not). Its standard error is the
 * large-sample one of a median, √(π/2) × the creatives' root mean variance / √k.
 */
function medianLevel(levels: readonly Level[]): Level {
  const k = levels.length;
  const logs = levels.map((level) => level.log).sort((a, b) => a - b);
  const log = k % 2 === 1 ? logs[(k - 1) / 2]! : (logs[k / 2 - 1]! + logs[k / 2]!) / 2;
  const meanVariance = levels.reduce((sum, level) => sum + level.se ** 2, 0) / k;
  return { log, se: Math.sqrt(((Math.PI / 2) * meanVariance) / k) };
}

/**
 * Is the campaign's level nearer the creative's level than no change? Distances in standard
 * errors: from no change, |campaign| / se(campaign); from the creative, |campaign − creative| /
 * √(se(campaign)² + se(creative)²). Nearer the creative: they moved together. Symmetric, so a
 * noisy campaign level tips it neither way.
 */
function movedTogether(own: Level, campaign: Level): boolean {
  return Math.abs(campaign.log - own.log) / Math.hypot(campaign.se, own.se) < Math.abs(campaign.log) / campaign.se;
}

/** A drop shared with the campaign, over the recent week or, for a sudden shift, over the latest days. */
function sharedDrop(test: DropTest, latest: Level | null, market: CampaignLevels): boolean {
  if (movedTogether(weekLevel(test), market.week)) return true;
  return latest !== null && market.latest !== null && movedTogether(latest, market.latest);
}

/**
 * The status of one creative on one day:
 * - insufficient_data: no verdict possible (see `testable`); `watch` instead when past the cumulative threshold;
 * - an alarm: the drop statistic at the alarm threshold and the drop's interval reaching `minDrop`;
 *   it persists while the statistic stays above WATCH_Z (no flicker around the threshold);
 * - an alarm is market_shift when the campaign (three creatives or more measured) moved with the
 *   creative (`sharedDrop`), unless the creative also dropped against the campaign's week level
 *   by the same alarm rule; fatigued otherwise;
 * - watch: an early signal (the statistic above WATCH_Z with a drop of `minDrop` in the interval), or past the cumulative threshold;
 * - healthy otherwise.
 * `dropSignal` (an alarm or an early signal) keeps the days leaving the recent week out of the baseline.
 */
function judge(
  creativeId: string,
  day: string,
  creative: CreativeState,
  recent: DayCounts,
  previous: FatigueStatus,
  test: DropTest | null,
  latest: Level | null,
  market: CampaignLevels | null,
  settings: FatigueSettings,
  threshold: number,
): { verdict: CreativeVerdict; dropSignal: boolean } {
  const pastThreshold = settings.cumulativeThreshold !== null && creative.cumulativeImpressions >= settings.cumulativeThreshold;
  const shared = test !== null && market !== null && sharedDrop(test, latest, market);
  const relative = test && market && shared ? relativeToMarket(test, market) : null;
  const evidence = evidenceOf(creative, day, recent, test, market, shared, relative, settings, threshold);
  const verdict = (status: FatigueStatus, score: number, dropSignal: boolean) => ({
    verdict: { creativeId, day, status, score: Math.max(0, score), since: null, evidence },
    dropSignal,
  });
  if (!test) return verdict(pastThreshold ? 'watch' : 'insufficient_data', 0, false);
  const matters = (ratio: Interval) => ratio.low <= 1 - settings.minDrop;
  const alarmed = previous === 'fatigued' || previous === 'market_shift';
  const earlySignal = test.statistic >= WATCH_Z && matters(test.ratio);
  const score = (relative ? relative.statistic : test.statistic) / threshold;
  if (test.statistic >= (alarmed ? WATCH_Z : threshold) && matters(test.ratio)) {
    if (!relative) return verdict('fatigued', score, true);
    const beyondMarket = relative.statistic >= (previous === 'fatigued' ? WATCH_Z : threshold) && matters(relative);
    return verdict(beyondMarket ? 'fatigued' : 'market_shift', score, true);
  }
  return verdict(earlySignal || pastThreshold ? 'watch' : 'healthy', score, earlySignal);
}

/** The creative against the campaign's level: its ratio over the median ratio, a z-score and a 95 % interval. */
function relativeToMarket(test: DropTest, market: CampaignLevels): RelativeLevel {
  const logRelative = Math.log(test.ratio.estimate) - market.week.log;
  const se = Math.hypot(test.logRatioSe, market.week.se);
  const interval = { estimate: Math.exp(logRelative), low: Math.exp(logRelative - Z95 * se), high: Math.exp(logRelative + Z95 * se) };
  return { ...interval, drop: dropOf(interval), statistic: -logRelative / se };
}

function evidenceOf(
  creative: CreativeState,
  day: string,
  recent: DayCounts,
  test: DropTest | null,
  market: CampaignLevels | null,
  shared: boolean,
  relative: RelativeLevel | null,
  settings: FatigueSettings,
  threshold: number,
): FatigueEvidence {
  const { baseline } = creative;
  const ctr = (c: DayCounts) => (c.impressions > 0 ? c.clicks / c.impressions : null);
  return {
    baseline: { impressions: baseline.impressions, clicks: baseline.clicks, ctr: ctr(baseline), days: baseline.days, from: baseline.from, to: baseline.to },
    recent: { ...recent, ctr: ctr(recent), days: creative.recent.length, from: creative.recent[0]!.day, to: day },
    drop: test?.drop ?? null,
    test: test && {
      statistic: test.statistic,
      pValue: test.pValue,
      threshold,
      watchThreshold: WATCH_Z,
      falseAlarmRate: settings.falseAlarmRate,
      minDrop: settings.minDrop,
    },
    market: market && {
      creatives: market.creatives,
      level: intervalOf(market.week),
      latestLevel: market.latest && intervalOf(market.latest),
      shared,
      relative,
    },
    cumulative: {
      impressions: creative.cumulativeImpressions,
      clicks: creative.cumulativeClicks,
      threshold: settings.cumulativeThreshold,
      projectedCrossing: projectedCrossing(creative, day, recent.impressions, settings.cumulativeThreshold),
    },
  };
}

function projectedCrossing(creative: CreativeState, day: string, recentImpressions: number, threshold: number | null): string | null {
  if (threshold === null || creative.cumulativeImpressions >= threshold || recentImpressions <= 0) return null;
  const perDay = recentImpressions / creative.recent.length;
  return formatDay(parseDay(day) + Math.ceil((threshold - creative.cumulativeImpressions) / perDay) * DAY_MS);
}

// ---------------------------------------------------------------------------------------------
// A whole campaign at once

export interface DailyVerdict extends DayCounts {
  day: string;
  ctr: number | null;
  /** the baseline CTR the day was judged against */
  baseline: number | null;
  /** the recent week's CTR, this day included */
  recent: number | null;
  /** the drop statistic (compare with evidence.test.threshold) */
  statistic: number | null;
  status: FatigueStatus;
}

export interface CreativeReport extends CreativeVerdict {
  /** every day from the creative's first impression to asOf */
  daily: DailyVerdict[];
}

/**
 * Scores a campaign from scratch up to `asOf` (later days are ignored): one report per creative,
 * its verdict on `asOf` and its daily series. Rows of the same creative and day are added up. The
 * same as stepping `stepCampaign` day by day from `emptyCampaignState()`, which is what an
 * incremental job does.
 */
export function scoreCampaign(creatives: ReadonlyMap<string, readonly DailyCounts[]>, settings: FatigueSettings, asOf: string): CreativeReport[] {
  const asOfMs = parseDay(asOf);
  const byDay = new Map<number, Map<string, DayCounts>>();
  for (const [creativeId, rows] of creatives) {
    for (const row of rows) {
      const dayMs = parseDay(row.day);
      if (dayMs > asOfMs) continue;
      checkCounts(creativeId, row.day, row);
      const counts = byDay.get(dayMs) ?? new Map<string, DayCounts>();
      const earlier = counts.get(creativeId);
      counts.set(creativeId, { impressions: (earlier?.impressions ?? 0) + row.impressions, clicks: (earlier?.clicks ?? 0) + row.clicks });
      byDay.set(dayMs, counts);
    }
  }
  const last = new Map<string, CreativeVerdict>();
  const daily = new Map<string, DailyVerdict[]>();
  if (byDay.size > 0) {
    let state = emptyCampaignState();
    for (let dayMs = Math.min(...byDay.keys()); dayMs <= asOfMs; dayMs += DAY_MS) {
      const counts = byDay.get(dayMs) ?? new Map<string, DayCounts>();
      const step = stepCampaign(state, formatDay(dayMs), counts, settings);
      state = step.state;
      for (const verdict of step.verdicts) {
        last.set(verdict.creativeId, verdict);
        const series = daily.get(verdict.creativeId) ?? [];
        series.push(dailyOf(verdict, counts.get(verdict.creativeId)));
        daily.set(verdict.creativeId, series);
      }
    }
  }
  return [...creatives.keys()].map((creativeId) => {
    const verdict = last.get(creativeId);
    return verdict ? { ...verdict, daily: daily.get(creativeId)! } : notStarted(creativeId, asOf, settings);
  });
}

function dailyOf(verdict: CreativeVerdict, counts: DayCounts | undefined): DailyVerdict {
  const impressions = counts?.impressions ?? 0;
  const clicks = counts?.clicks ?? 0;
  return {
    day: verdict.day,
    impressions,
    clicks,
    ctr: impressions > 0 ? clicks / impressions : null,
    baseline: verdict.evidence.test ? verdict.evidence.baseline.ctr : null,
    recent: verdict.evidence.recent.ctr,
    statistic: verdict.evidence.test?.statistic ?? null,
    status: verdict.status,
  };
}

function notStarted(creativeId: string, day: string, settings: FatigueSettings): CreativeReport {
  return {
    creativeId,
    day,
    status: 'insufficient_data',
    score: 0,
    since: null,
    evidence: {
      baseline: { impressions: 0, clicks: 0, ctr: null, days: 0, from: null, to: null },
      recent: { impressions: 0, clicks: 0, ctr: null, days: 0, from: day, to: day },
      drop: null,
      test: null,
      market: null,
      cumulative: { impressions: 0, clicks: 0, threshold: settings.cumulativeThreshold, projectedCrossing: null },
    },
    daily: [],
  };
}

// ---------------------------------------------------------------------------------------------
// Days

const DAY_MS = 86_400_000;
const DAY_PATTERN = /^(\d{4})-(\d{2})-(\d{2})$/;

// Days are few and recur every step: both conversions are memoised (a few hundred entries a year).
const dayMs = new Map<string, number>();
const dayText = new Map<number, string>();

/** Epoch milliseconds of a YYYY-MM-DD day (UTC midnight); a RangeError for anything else. */
function parseDay(day: string): number {
  let ms = dayMs.get(day);
  if (ms === undefined) {
    const match = DAY_PATTERN.exec(day);
    ms = match ? Date.UTC(Number(match[1]), Number(match[2]) - 1, Number(match[3])) : NaN;
    if (!match || formatDay(ms) !== day) throw new RangeError(`day must be a YYYY-MM-DD date, got ${JSON.stringify(day)}`);
    dayMs.set(day, ms);
  }
  return ms;
}

function formatDay(ms: number): string {
  let text = dayText.get(ms);
  if (text === undefined) {
    if (!Number.isFinite(ms)) return 'invalid';
    text = new Date(ms).toISOString().slice(0, 10);
    dayText.set(ms, text);
  }
  return text;
}

// ---------------------------------------------------------------------------------------------
// Exposure curve

export interface ExposureCount {
  /** the k-th impression of the same user (1, 2, …); with `openLast`, the highest is "k or more" */
  exposure: number;
  impressions: number;
  clicks: number;
}

export interface ExposurePoint extends ExposureCount {
  ctr: number | null;
  /** Wilson 95 % interval of the CTR */
  low: number | null;
  high: number | null;
  /** the open last bucket ("k or more"): shown, not fitted */
  open: boolean;
}

export interface ExposureFit {
  /** fitted CTR at the first exposure */
  ctrAtFirst: number;
  /** the factor CTR is multiplied by at each further exposure, with its 95 % interval */
  factorPerExposure: Interval;
  /** the exposure at which the fitted CTR is half the first's; null when CTR does not significantly fall */
  halfLifeExposure: number | null;
  halfLifeInterval: { low: number; high: number } | null;
  /** Poisson deviance of the fit and its degrees of freedom (deviance ≫ df: the curve is not exponential) */
  deviance: number;
  degreesOfFreedom: number;
  /** Pearson χ² / df, at least 1: the standard errors are multiplied by its square root (quasi-Poisson) */
  dispersion: number;
  /** exposure levels and clicks fitted */
  levels: number;
  clicks: number;
}

export interface ExposureCurve {
  points: ExposurePoint[];
  fit: ExposureFit | null;
  halfLifeExposure: number | null;
  /** why there is no half-life: not enough data, no convergence, or no significant fall; null when there is one */
  reason: string | null;
}

/** Exposure levels with impressions, and clicks in all, a fit needs. */
export const MIN_EXPOSURE_LEVELS = 3;
export const MIN_EXPOSURE_CLICKS = 20;

/**
 * CTR by exposure (the 1st, 2nd, … impression of the same user), and an exponential wear-out fit,
 * CTR(k) = CTR(1) × factor^(k−1), by maximum likelihood: clicks at exposure k are Poisson with
 * mean impressions × CTR(k) (a GLM with log link, Newton's method). Poisson rather than binomial:
 * a user may click one impression twice, so a cell's clicks may exceed its impressions, and at
 * CTRs of a few percent the two agree. The half-life, 1 + ln 2 / −ln factor, is the exposure at
 * which the fitted CTR is half the first's. Its 95 % interval maps the Wald interval of ln factor,
 * widened by √dispersion when the cells scatter more than Poisson (Pearson χ² / df > 1: users who
 * differ in CTR, a curve that is not exponential): the quasi-Poisson interval. The same users feed
 * every exposure up to their own count, so the cells are not independent; the interval is
 * narrower than a per-user bootstrap's would be where a few users carry many clicks.
 * With `openLast`, the highest exposure is an open bucket ("20 or more"): shown, not fitted.
 */
export function exposureCurve(counts: readonly ExposureCount[], options: { openLast?: boolean } = {}): ExposureCurve {
  const seen = new Set<number>();
  for (const row of counts) {
    if (!Number.isInteger(row.exposure) || row.exposure < 1) throw new RangeError(`exposure must be a whole number from 1, got ${row.exposure}`);
    if (seen.has(row.exposure)) throw new RangeError(`exposure ${row.exposure} is given twice`);
    seen.add(row.exposure);
    for (const field of ['impressions', 'clicks'] as const) {
      if (!Number.isInteger(row[field]) || row[field] < 0) {
        throw new RangeError(`${field} at exposure ${row.exposure} must be a whole number, 0 or more (got ${row[field]})`);
      }
    }
  }
  const openFrom = options.openLast && counts.length > 0 ? Math.max(...counts.map((row) => row.exposure)) : Infinity;
  const points = [...counts]
    .sort((a, b) => a.exposure - b.exposure)
    .map((row): ExposurePoint => {
      const interval = wilsonInterval(Math.min(row.clicks, row.impressions), row.impressions);
      const ctr = row.impressions > 0 ? row.clicks / row.impressions : null;
      return { ...row, ctr, low: interval?.low ?? null, high: interval?.high ?? null, open: row.exposure >= openFrom };
    });
  const fitted = points.filter((point) => point.impressions > 0 && !point.open);
  const clicks = fitted.reduce((sum, point) => sum + point.clicks, 0);
  if (fitted.length < MIN_EXPOSURE_LEVELS || clicks < MIN_EXPOSURE_CLICKS) {
    const reason = `not enough data: a fit needs impressions at ${MIN_EXPOSURE_LEVELS} exposures or more and ${MIN_EXPOSURE_CLICKS} clicks (has ${fitted.length} and ${clicks})`;
    return { points, fit: null, halfLifeExposure: null, reason };
  }
  const fit = fitExposureDecay(fitted);
  if (!fit) return { points, fit: null, halfLifeExposure: null, reason: 'the fit does not converge (CTR falls to zero after the first exposures)' };
  const reason = fit.halfLifeExposure === null ? 'CTR does not fall significantly with exposure' : null;
  return { points, fit, halfLifeExposure: fit.halfLifeExposure, reason };
}

/** The maximum-likelihood fit of log(expected clicks) = log(impressions) + a + g × (k − 1); null when it does not converge. */
function fitExposureDecay(points: readonly ExposureCount[]): ExposureFit | null {
  const totalClicks = points.reduce((sum, point) => sum + point.clicks, 0);
  const totalImpressions = points.reduce((sum, point) => sum + point.impressions, 0);
  let a = Math.log(totalClicks / totalImpressions);
  let g = 0;
  const logLikelihood = (a0: number, g0: number) =>
    points.reduce((sum, p) => sum + p.clicks * (a0 + g0 * (p.exposure - 1)) - p.impressions * Math.exp(a0 + g0 * (p.exposure - 1)), 0);
  let info = { aa: 0, ag: 0, gg: 0 };
  let converged = false;
  for (let iteration = 0; iteration < 100 && !converged; iteration++) {
    let ua = 0;
    let ug = 0;
    info = { aa: 0, ag: 0, gg: 0 };
    for (const p of points) {
      const x = p.exposure - 1;
      const mu = p.impressions * Math.exp(a + g * x);
      ua += p.clicks - mu;
      ug += x * (p.clicks - mu);
      info.aa += mu;
      info.ag += x * mu;
      info.gg += x * x * mu;
    }
    const det = info.aa * info.gg - info.ag * info.ag;
    if (!(det > 0)) return null;
    let da = (info.gg * ua - info.ag * ug) / det;
    let dg = (info.aa * ug - info.ag * ua) / det;
    const before = logLikelihood(a, g);
    let halvings = 0;
    while (logLikelihood(a + da, g + dg) < before - 1e-12 && halvings++ < 30) {
      da /= 2;
      dg /= 2;
    }
    a += da;
    g += dg;
    converged = Math.abs(da) < 1e-10 && Math.abs(dg) < 1e-10;
  }
  const det = info.aa * info.gg - info.ag * info.ag;
  if (!converged || !(det > 0) || !Number.isFinite(a) || !Number.isFinite(g)) return null;
  let deviance = 0;
  let pearson = 0;
  for (const p of points) {
    const mu = p.impressions * Math.exp(a + g * (p.exposure - 1));
    deviance += 2 * ((p.clicks > 0 ? p.clicks * Math.log(p.clicks / mu) : 0) - (p.clicks - mu));
    pearson += (p.clicks - mu) ** 2 / mu;
  }
  const degreesOfFreedom = points.length - 2;
  const dispersion = Math.max(1, pearson / degreesOfFreedom);
  const gSe = Math.sqrt((info.aa / det) * dispersion);
  const decay = -g;
  const significant = decay - Z95 * gSe > 0;
  const halfLife = (rate: number) => 1 + Math.LN2 / rate;
  return {
    ctrAtFirst: Math.exp(a),
    factorPerExposure: { estimate: Math.exp(g), low: Math.exp(g - Z95 * gSe), high: Math.exp(g + Z95 * gSe) },
    halfLifeExposure: significant ? halfLife(decay) : null,
    halfLifeInterval: significant ? { low: halfLife(decay + Z95 * gSe), high: halfLife(decay - Z95 * gSe) } : null,
    deviance,
    degreesOfFreedom,
    dispersion,
    levels: points.length,
    clicks: totalClicks,
  };
}
