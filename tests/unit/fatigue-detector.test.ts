import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { PreciseError } from '../../core/errors.ts';
import { mulberry32 } from '../../scheduled/attribution/models.ts';
import {
  DEFAULT_FATIGUE_SETTINGS,
  MIN_BASELINE_CLICKS,
  MIN_EXPOSURE_CLICKS,
  MIN_BASELINE_DAYS,
  RECENT_DAYS,
  WATCH_Z,
  alarmThreshold,
  binomialCdf,
  dropTest,
  emptyCampaignState,
  exposureCurve,
  lnGamma,
  normalCdf,
  normalQuantile,
  parseFatigueSettings,
  regularizedBeta,
  scoreCampaign,
  stepCampaign,
  wilsonInterval,
  type CampaignState,
  type CreativeVerdict,
  type DailyCounts,
  type DayCounts,
  type ExposureCount,
  type FatigueSettings,
  type FatigueStatus,
} from '../../scheduled/fatigue/detector.ts';

const DAY0 = Date.UTC(2026, 0, 1);
const dayOf = (index: number) => new Date(DAY0 + index * 86_400_000).toISOString().slice(0, 10);
const S = DEFAULT_FATIGUE_SETTINGS;

function expectRelative(actual: number, expected: number, tolerance: number) {
  expect(Math.abs(actual - expected) / Math.abs(expected)).toBeLessThan(tolerance);
}

// ---------------------------------------------------------------------------------------------
// Simulation helpers: seeded, so every run draws the same creatives

/** Binomial(n, p) by inversion from 0: exact, and quick for n·p up to a few hundred. */
function binomial(random: () => number, n: number, p: number): number {
  const u = random();
  const odds = p / (1 - p);
  let k = 0;
  let pmf = (1 - p) ** n;
  let cdf = pmf;
  while (u > cdf && k < n) {
    pmf *= ((n - k) / (k + 1)) * odds;
    k += 1;
    cdf += pmf;
  }
  return k;
}

/** A CTR multiplier per day (1 = the baseline CTR). */
type Profile = (day: number) => number;
const stable: Profile = () => 1;
const sudden = (at: number, drop = 0.3): Profile => (day) => (day >= at ? 1 - drop : 1);
/** The drop spread over `over` days: the day `at` is the first lower one, `at + over − 1` the last. */
const gradual = (at: number, drop = 0.3, over = 7): Profile => (day) => (day < at ? 1 : 1 - drop * Math.min(1, (day - at + 1) / over));

/** One campaign, one creative per profile, the same daily impressions each: the status of each creative each day. */
function simulateCampaign(random: () => number, profiles: readonly Profile[], days: number, impressions: number, settings: FatigueSettings = S, ctr = 0.02) {
  let state: CampaignState = emptyCampaignState();
  const statuses: FatigueStatus[][] = profiles.map(() => []);
  for (let day = 0; day < days; day++) {
    const counts = new Map<string, DayCounts>();
    profiles.forEach((profile, i) => counts.set(String(i), { impressions, clicks: binomial(random, impressions, ctr * profile(day)) }));
    const step = stepCampaign(state, dayOf(day), counts, settings);
    state = step.state;
    for (const verdict of step.verdicts) statuses[Number(verdict.creativeId)]![day] = verdict.status;
  }
  return statuses;
}

/** The first day of a verdict at `impressions` a day and 2 % CTR: a baseline of a week, minImpressions and MIN_BASELINE_CLICKS, then a recent week. */
function firstVerdictDay(impressions: number, settings: FatigueSettings = S, ctr = 0.02) {
  const baselineDays = Math.max(MIN_BASELINE_DAYS, Math.ceil(settings.minImpressions / impressions), Math.ceil(MIN_BASELINE_CLICKS / (impressions * ctr)));
  return baselineDays + RECENT_DAYS - 1;
}

/** Share of creatives alone in their campaign that are ever `fatigued` over `verdictDays` days of verdicts. */
function falseAlarmShare(seed: number, creatives: number, impressions: number, verdictDays = 30) {
  const random = mulberry32(seed);
  const first = firstVerdictDay(impressions);
  let flagged = 0;
  for (let i = 0; i < creatives; i++) {
    if (simulateCampaign(random, [stable], first + verdictDays, impressions)[0]!.includes('fatigued')) flagged++;
  }
  return flagged / creatives;
}

/**
 * Creatives alone in their campaign whose CTR drops by 30 % (suddenly, or over a week) eight days
 * after their first verdict: for each, the days from the drop's end to its first `fatigued`
 * (Infinity when not within `horizon` days).
 */
function detectionDelays(seed: number, creatives: number, impressions: number, kind: 'sudden' | 'gradual', horizon = 14) {
  const random = mulberry32(seed);
  const start = firstVerdictDay(impressions) + 8;
  const end = kind === 'sudden' ? start : start + 6;
  const profile = kind === 'sudden' ? sudden(start) : gradual(start);
  const delays: number[] = [];
  for (let i = 0; i < creatives; i++) {
    const statuses = simulateCampaign(random, [profile], end + horizon + 1, impressions)[0]!;
    const first = statuses.findIndex((status, day) => day >= start && status === 'fatigued');
    delays.push(first < 0 ? Infinity : first - end);
  }
  return delays;
}

const shareWithin = (delays: readonly number[], days: number) => delays.filter((delay) => delay <= days).length / delays.length;

// ---------------------------------------------------------------------------------------------

describe('distributions against known values (SciPy 1.x)', () => {
  it('ln Γ', () => {
    expect(lnGamma(0.5)).toBeCloseTo(0.5723649429247004, 13);
    expect(lnGamma(10)).toBeCloseTo(12.801827480081467, 12);
    expect(lnGamma(0.1)).toBeCloseTo(2.2527126517342055, 13);
    expectRelative(lnGamma(1000.5), 5908.674175848678, 1e-14);
  });

  it('the regularized incomplete beta function and the binomial distribution function', () => {
    expectRelative(regularizedBeta(0.4, 2.5, 3.5), 0.4869041915261176, 1e-12);
    expectRelative(regularizedBeta(2 / 3, 300, 99), 9.948132944877798e-5, 1e-10);
    expectRelative(regularizedBeta(0.5, 50, 50), 0.5, 1e-13);
    expectRelative(binomialCdf(98, 420, 1 / 3), 4.91383669333432e-6, 1e-9);
    expectRelative(binomialCdf(0, 10, 0.3), 0.0282475249, 1e-12);
    expectRelative(binomialCdf(5, 20, 0.5), 0.020694732666015625, 1e-12);
    expectRelative(binomialCdf(150, 1000, 0.2), 2.6443381908983066e-5, 1e-9);
    expectRelative(binomialCdf(2, 2000, 0.002), 0.23781001087834902, 1e-11);
    expectRelative(binomialCdf(3000, 10000, 0.32), 8.541946600645396e-6, 1e-8);
    expect(binomialCdf(10, 10, 0.5)).toBe(1);
    expect(binomialCdf(-1, 10, 0.5)).toBe(0);
  });

  it('Φ and Φ⁻¹', () => {
    expectRelative(normalCdf(-1.96), 0.024997895148220435, 1e-13);
    expectRelative(normalCdf(-3), 0.0013498980316300933, 1e-13);
    expectRelative(normalCdf(-8), 6.22096057427174e-16, 1e-12);
    expectRelative(normalCdf(-20), 2.7536241186061556e-89, 1e-12);
    expectRelative(normalCdf(-6.361340902404056), 1e-10, 1e-12);
    expect(normalCdf(2.5)).toBeCloseTo(0.9937903346742238, 15);
    expect(normalQuantile(0.025)).toBeCloseTo(-1.9599639845400545, 13);
    expect(normalQuantile(0.975)).toBeCloseTo(1.959963984540054, 13);
    expect(normalQuantile(0.3)).toBeCloseTo(-0.5244005127080409, 13);
    expect(normalQuantile(1e-10)).toBeCloseTo(-6.361340902404056, 11);
    expect(WATCH_Z).toBeCloseTo(-normalQuantile(0.05), 14);
  });

  it("Wilson's interval", () => {
    const interval = wilsonInterval(20, 1000)!;
    expect(interval.low).toBeCloseTo(0.012983682916415135, 14);
    expect(interval.high).toBeCloseTo(0.030690005229717786, 14);
    expect(wilsonInterval(0, 50)!.low).toBeCloseTo(0, 15);
    expect(wilsonInterval(0, 50)!.high).toBeCloseTo(0.07134759913335872, 14);
    expect(wilsonInterval(0, 0)).toBeNull();
  });
});

describe('the drop test', () => {
  it("is the exact conditional binomial test (SciPy's binomtest, alternative='less') with Katz's log-ratio interval", () => {
    const test = dropTest({ impressions: 14000, clicks: 300 }, { impressions: 7000, clicks: 98 })!;
    expectRelative(test.pValue, 9.948132944877974e-5, 1e-9);
    expect(test.statistic).toBeCloseTo(-normalQuantile(test.pValue), 12);
    expect(test.ratio.estimate).toBeCloseTo(0.6533333333333333, 14);
    expect(test.ratio.low).toBeCloseTo(0.5210556939754849, 13);
    expect(test.ratio.high).toBeCloseTo(0.8191915938731243, 13);
    expect(test.logRatioSe).toBeCloseTo(0.11542586041135097, 14);
    expect(test.drop).toEqual({ estimate: 1 - test.ratio.estimate, low: 1 - test.ratio.high, high: 1 - test.ratio.low });
  });

  it('stays finite with no recent clicks and says nothing without impressions', () => {
    const test = dropTest({ impressions: 14000, clicks: 300 }, { impressions: 7000, clicks: 0 })!;
    expect(test.pValue).toBeCloseTo((2 / 3) ** 300, 60);
    expect(Number.isFinite(test.statistic) && Number.isFinite(test.ratio.low)).toBe(true);
    expect(dropTest({ impressions: 14000, clicks: 300 }, { impressions: 0, clicks: 0 })).toBeNull();
  });
});

describe('the alarm threshold', () => {
  it('is the one-sided normal quantile when there is a single look (the known value)', () => {
    for (const rate of [0.05, 0.01]) expect(Math.abs(alarmThreshold(rate, { looks: 1 }) - -normalQuantile(rate))).toBeLessThan(0.02);
  });

  it('for 30 daily looks, lies between the single look and Bonferroni over 30 looks, and falls as the rate grows', () => {
    const threshold = alarmThreshold(0.05);
    expect(threshold).toBeGreaterThan(-normalQuantile(0.05));
    expect(threshold).toBeLessThan(-normalQuantile(0.05 / 30));
    expect(threshold).toBeCloseTo(2.83, 1);
    expect(alarmThreshold(0.01)).toBeGreaterThan(alarmThreshold(0.02));
    expect(alarmThreshold(0.02)).toBeGreaterThan(threshold);
    // another seed: the same threshold within its simulation error
    expect(Math.abs(alarmThreshold(0.05, { seed: 99 }) - threshold)).toBeLessThan(0.02);
  });
});

describe('settings from campaign properties', () => {
  it('takes the defaults, then what the properties set', () => {
    expect(parseFatigueSettings(undefined)).toEqual(S);
    expect(parseFatigueSettings({ budget: 50000 })).toEqual(S);
    const properties = { creative_fatigue_threshold: 2_000_000, fatigue: { min_drop: 0.3, min_impressions: 20000, false_alarm_rate: 0.01 } };
    expect(parseFatigueSettings(properties)).toEqual({
      minDrop: 0.3,
      minImpressions: 20000,
      falseAlarmRate: 0.01,
      cumulativeThreshold: 2_000_000,
    });
  });

  it('rejects what it cannot use, naming the field', () => {
    const cases: Array<[unknown, string]> = [
      [[1, 2], 'properties'],
      [{ creative_fatigue_threshold: -5 }, 'properties.creative_fatigue_threshold'],
      [{ creative_fatigue_threshold: '2000000' }, 'properties.creative_fatigue_threshold'],
      [{ fatigue: 0.2 }, 'properties.fatigue'],
      [{ fatigue: { min_drop: 20 } }, 'properties.fatigue.min_drop'],
      [{ fatigue: { min_drop: 0 } }, 'properties.fatigue.min_drop'],
      [{ fatigue: { min_impressions: 10.5 } }, 'properties.fatigue.min_impressions'],
      [{ fatigue: { false_alarm_rate: 0.9 } }, 'properties.fatigue.false_alarm_rate'],
      [{ fatigue: { min_drops: 0.2 } }, 'properties.fatigue.min_drops'],
    ];
    for (const [properties, field] of cases) {
      let error: unknown;
      try {
        parseFatigueSettings(properties);
      } catch (caught) {
        error = caught;
      }
      expect(error).toBeInstanceOf(PreciseError);
      expect((error as PreciseError).code).toBe('validation_failed');
      expect((error as PreciseError).details.field).toBe(field);
    }
  });
});

// A worked example, every count fixed: 1,000 impressions and 20 clicks a day for three weeks, then 13.
const worked = new Map<string, DailyCounts[]>([
  ['crv-a', Array.from({ length: 35 }, (_, day) => ({ day: dayOf(day), impressions: 1000, clicks: day < 21 ? 20 : 13 }))],
]);

describe('scoring a creative day by day', () => {
  it('needs a baseline of a week (and minImpressions) and a recent week before any verdict', () => {
    const [report] = scoreCampaign(worked, S, dayOf(34));
    const statuses = report!.daily.map((row) => row.status);
    expect(statuses.slice(0, 13).every((status) => status === 'insufficient_data')).toBe(true);
    expect(statuses.slice(13, 21).every((status) => status === 'healthy')).toBe(true);
    const strict = scoreCampaign(worked, { ...S, minImpressions: 10_000 }, dayOf(34))[0]!;
    expect(strict.daily.findIndex((row) => row.status !== 'insufficient_data')).toBe(16);
  });

  it('flags the 35 % drop, with the evidence it rests on', () => {
    const [report] = scoreCampaign(worked, S, dayOf(34));
    const firstFatigued = report!.daily.findIndex((row) => row.status === 'fatigued');
    expect(firstFatigued).toBeGreaterThan(21);
    expect(firstFatigued).toBeLessThanOrEqual(21 + 7);
    expect(report!.status).toBe('fatigued');
    expect(report!.since).toBe(dayOf(firstFatigued));
    const { evidence } = report!;
    // the baseline froze when the drop showed: it holds only days at the old CTR
    expect(evidence.baseline.ctr).toBe(0.02);
    expect(evidence.baseline.to! < dayOf(21)).toBe(true);
    expect(evidence.recent).toMatchObject({ impressions: 7000, clicks: 91, ctr: 0.013, days: 7, from: dayOf(28), to: dayOf(34) });
    const expected = dropTest(evidence.baseline, evidence.recent)!;
    expect(evidence.drop).toEqual(expected.drop);
    expect(evidence.drop!.estimate).toBeCloseTo(0.35, 12);
    expect(evidence.test).toEqual({
      statistic: expected.statistic,
      pValue: expected.pValue,
      threshold: alarmThreshold(S.falseAlarmRate),
      watchThreshold: WATCH_Z,
      falseAlarmRate: S.falseAlarmRate,
      minDrop: S.minDrop,
    });
    expect(report!.score).toBeCloseTo(expected.statistic / alarmThreshold(S.falseAlarmRate), 12);
    expect(evidence.market).toBeNull(); // a campaign of one creative has no market to compare with
    const last = report!.daily.at(-1)!;
    expect(last).toMatchObject({ day: dayOf(34), impressions: 1000, clicks: 13, ctr: 0.013, baseline: 0.02, recent: 0.013, status: 'fatigued' });
  });

  it('clears when the CTR comes back', () => {
    const rows = Array.from({ length: 60 }, (_, day) => ({ day: dayOf(day), impressions: 1000, clicks: day >= 21 && day < 35 ? 13 : 20 }));
    const [report] = scoreCampaign(new Map([['crv-a', rows]]), S, dayOf(59));
    expect(report!.daily[34]!.status).toBe('fatigued');
    expect(report!.status).toBe('healthy');
    // the drop's days stayed out of the baseline, but for the last ones to leave the recent week once it looked normal again
    expect(report!.evidence.baseline.ctr).toBeGreaterThan(0.019);
  });

  it('steps incrementally from a stored (JSON) state to the same verdicts, without touching that state', () => {
    const random = mulberry32(3);
    const creatives = new Map<string, DailyCounts[]>();
    for (const id of ['a', 'b', 'c', 'd']) {
      const ctr = (day: number) => 0.02 * (id === 'a' && day >= 25 ? 0.6 : 1);
      creatives.set(id, Array.from({ length: 40 }, (_, day) => ({ day: dayOf(day), impressions: 1500, clicks: binomial(random, 1500, ctr(day)) })));
    }
    const reports = scoreCampaign(creatives, S, dayOf(39));
    let state = emptyCampaignState();
    const incremental = new Map<string, CreativeVerdict[]>();
    for (let day = 0; day < 40; day++) {
      const counts = new Map([...creatives].map(([id, rows]) => [id, rows[day]!] as const));
      const frozen = deepFreeze(JSON.parse(JSON.stringify(state)) as CampaignState);
      const step = stepCampaign(frozen, dayOf(day), counts, S);
      state = step.state;
      for (const verdict of step.verdicts) incremental.set(verdict.creativeId, [...(incremental.get(verdict.creativeId) ?? []), verdict]);
    }
    for (const report of reports) {
      expect(incremental.get(report.creativeId)!.map((verdict) => verdict.status)).toEqual(report.daily.map((row) => row.status));
      const { daily, ...verdict } = report;
      expect(incremental.get(report.creativeId)!.at(-1)).toEqual(verdict);
    }
    expect(reports.find((report) => report.creativeId === 'a')!.status).toBe('fatigued');
  });

  it('steps over days without data, refuses to go back, adds up duplicate rows and reports creatives that never started', () => {
    const step = stepCampaign(emptyCampaignState(), dayOf(0), { x: { impressions: 10, clicks: 1 } }, S);
    const later = stepCampaign(step.state, dayOf(5), {}, S);
    expect(later.state.creatives.x!.recent.map((row) => row.day)).toEqual([0, 1, 2, 3, 4, 5].map(dayOf));
    expect(() => stepCampaign(later.state, dayOf(5), {}, S)).toThrow(RangeError);
    expect(() => stepCampaign(later.state, '2026-02-30', {}, S)).toThrow(RangeError);
    expect(() => stepCampaign(later.state, dayOf(6), { x: { impressions: 10, clicks: 0.5 } }, S)).toThrow(RangeError);

    const doubled = new Map([...worked].map(([id, rows]) => [id, [...rows, ...rows]] as const));
    doubled.set('crv-silent', []);
    const [report, silent] = scoreCampaign(doubled, S, dayOf(20));
    expect(report!.evidence.cumulative.impressions).toBe(2 * 21 * 1000);
    expect(report!.daily).toHaveLength(21); // days after asOf are left out
    expect(silent).toMatchObject({ creativeId: 'crv-silent', status: 'insufficient_data', since: null, daily: [] });
  });

  it('puts a creative past creative_fatigue_threshold on watch, and says when it will cross it', () => {
    const settings = { ...S, cumulativeThreshold: 30_000 };
    const [report] = scoreCampaign(worked, settings, dayOf(34));
    expect(report!.daily[5]!.status).toBe('insufficient_data');
    expect(report!.daily[20]!.status).toBe('healthy');
    const early = scoreCampaign(worked, settings, dayOf(20))[0]!;
    // 21,000 impressions at 1,000 a day: the 30,000th comes 9 days on
    expect(early.evidence.cumulative).toEqual({ impressions: 21_000, clicks: 420, threshold: 30_000, projectedCrossing: dayOf(29) });
    const past = scoreCampaign(worked, { ...settings, cumulativeThreshold: 10_000 }, dayOf(20))[0]!;
    expect(past.status).toBe('watch');
    expect(past.daily[9]!.status).toBe('watch'); // before any test: past the threshold is watch, not insufficient_data
    expect(past.evidence.cumulative.projectedCrossing).toBeNull();
  });
});

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object') {
    for (const inner of Object.values(value)) deepFreeze(inner);
    Object.freeze(value);
  }
  return value;
}

// ---------------------------------------------------------------------------------------------
// Simulated creatives: the acceptance targets of issue 13

describe('simulated creatives', () => {
  it('stable creatives at 20 clicks a day are flagged fatigued in at most 5 % over 30 days of verdicts', () => {
    const share = falseAlarmShare(101, 1500, 1000);
    expect(share).toBeLessThanOrEqual(0.05);
    expect(share).toBeGreaterThan(0.02); // the rate is spent, not wasted: the threshold is not needlessly high
  });

  it('at 30 clicks a day, a 30 % drop, sudden or over a week, is fatigued within 7 days of its end in at least 90 %', () => {
    expect(shareWithin(detectionDelays(102, 500, 1500, 'sudden', 7), 7)).toBeGreaterThanOrEqual(0.9);
    expect(shareWithin(detectionDelays(103, 500, 1500, 'gradual', 7), 7)).toBeGreaterThanOrEqual(0.9);
  });

  it('at 20 clicks a day, the same drop is fatigued within 14 days in at least 90 % (within 7: about 76 % sudden, 85 % gradual)', () => {
    const suddenDelays = detectionDelays(104, 500, 1000, 'sudden');
    const gradualDelays = detectionDelays(105, 500, 1000, 'gradual');
    expect(shareWithin(suddenDelays, 14)).toBeGreaterThanOrEqual(0.9);
    expect(shareWithin(gradualDelays, 14)).toBeGreaterThanOrEqual(0.9);
    expect(shareWithin(suddenDelays, 7)).toBeGreaterThanOrEqual(0.7);
    expect(shareWithin(gradualDelays, 7)).toBeGreaterThanOrEqual(0.78);
  });

  it('a drop shared by two thirds of a campaign is market_shift, not fatigued, for at least 90 % of them', () => {
    const random = mulberry32(106);
    const drop = 21;
    let dropped = 0;
    let marketAtEnd = 0;
    let everFatigued = 0;
    let stableFatigued = 0;
    for (let campaign = 0; campaign < 250; campaign++) {
      const profiles = [sudden(drop), sudden(drop), sudden(drop), sudden(drop), stable, stable];
      const statuses = simulateCampaign(random, profiles, drop + 8, 2000);
      statuses.forEach((series, i) => {
        if (i >= 4) {
          if (series.includes('fatigued')) stableFatigued++;
          return;
        }
        dropped++;
        if (series[drop + 7] === 'market_shift') marketAtEnd++;
        if (series.includes('fatigued')) everFatigued++;
      });
    }
    expect(marketAtEnd / dropped).toBeGreaterThanOrEqual(0.9);
    expect(everFatigued / dropped).toBeLessThanOrEqual(0.08); // a few are fatigued for a day or two before the campaign's drop shows
    expect(stableFatigued / 500).toBeLessThanOrEqual(0.05);
  });

  it('a creative that drops alone in a campaign of six is fatigued, not market_shift', () => {
    const random = mulberry32(107);
    const drop = 21;
    let fatigued = 0;
    let market = 0;
    for (let campaign = 0; campaign < 300; campaign++) {
      const series = simulateCampaign(random, [sudden(drop), stable, stable, stable, stable, stable], drop + 8, 2000)[0]!;
      if (series[drop + 7] === 'fatigued') fatigued++;
      if (series[drop + 7] === 'market_shift') market++;
    }
    expect(fatigued / 300).toBeGreaterThanOrEqual(0.9);
    expect(market / 300).toBeLessThanOrEqual(0.05);
  });

  it('creatives with too little data are insufficient_data, never fatigued, even when their clicks stop', () => {
    const random = mulberry32(108);
    for (let i = 0; i < 200; i++) {
      // 80 impressions a day for 60 days: 4,800, short of minImpressions; then no clicks at all
      const statuses = simulateCampaign(random, [(day) => (day >= 30 ? 0 : 1)], 60, 80)[0]!;
      expect(new Set(statuses)).toEqual(new Set(['insufficient_data']));
    }
  });

  it('with no minimum impressions, quiet creatives are still bounded: a baseline of 25 clicks, and false alarms within the rate', () => {
    const settings = { ...S, minImpressions: 0 };
    const random = mulberry32(109);
    let flagged = 0;
    for (let i = 0; i < 400; i++) {
      // 100 impressions a day at 2 %: the baseline reaches 25 clicks after about two weeks
      const statuses = simulateCampaign(random, [stable], 60, 100, settings)[0]!;
      expect(statuses.slice(0, 13).every((status) => status === 'insufficient_data')).toBe(true);
      if (statuses.includes('fatigued')) flagged++;
    }
    expect(flagged / 400).toBeLessThanOrEqual(0.05);
  });
});

describe('the exposure curve', () => {
  const counts = [50000, 30000, 20000, 14000, 10000, 7000, 5000, 3500].map((impressions, i) => ({
    exposure: i + 1,
    impressions,
    clicks: [1523, 751, 447, 296, 179, 107, 66, 41][i]!,
  }));

  // reference: the score equations solved in NumPy (SciPy's Nelder–Mead optimum of the likelihood agrees to 1e-8)
  it('fits CTR(k) = CTR(1) × factor^(k−1) by maximum likelihood', () => {
    const { points, fit, halfLifeExposure } = exposureCurve(counts);
    expect(points[0]).toMatchObject({ exposure: 1, impressions: 50000, clicks: 1523, ctr: 1523 / 50000 });
    expect(points[0]!.low).toBeLessThan(points[0]!.ctr!);
    expect(fit!.ctrAtFirst).toBeCloseTo(0.029927416155012668, 11);
    expect(fit!.factorPerExposure.estimate).toBeCloseTo(0.8745921028857606, 11);
    expect(fit!.factorPerExposure.high).toBeCloseTo(Math.exp(Math.log(0.8745921028857606) + 1.959963984540054 * 0.01043192591266536), 10);
    expect(halfLifeExposure).toBeCloseTo(6.1728301203274905, 9);
    expect(fit!.halfLifeInterval!.low).toBeLessThan(halfLifeExposure!);
    expect(fit!.halfLifeInterval!.high).toBeGreaterThan(halfLifeExposure!);
    expect(fit!.deviance).toBeCloseTo(3.2084913760741105, 9);
    expect(fit!.degreesOfFreedom).toBe(6);
  });

  it('recovers an exact decay, and gives no half-life where CTR does not fall or data are thin', () => {
    const exact = Array.from({ length: 6 }, (_, i) => ({ exposure: i + 1, impressions: 1e8, clicks: Math.round(1e8 * 0.02 * 0.8 ** i) }));
    expect(exposureCurve(exact).halfLifeExposure).toBeCloseTo(1 + Math.LN2 / -Math.log(0.8), 5);
    const flat = Array.from({ length: 6 }, (_, i) => ({ exposure: i + 1, impressions: 10000, clicks: 200 }));
    expect(exposureCurve(flat).fit!.halfLifeExposure).toBeNull();
    expect(exposureCurve(counts.slice(0, 2)).fit).toBeNull();
    expect(exposureCurve(counts.slice(0, 2)).reason).toMatch(/^not enough data/);
    expect(() => exposureCurve([...counts, counts[0]!])).toThrow(RangeError);
  });

  // reference: the same likelihood maximised by SciPy (BFGS, then Newton on the score), the
  // Fisher information inverted by NumPy, Pearson χ² / df as the dispersion
  it('widens the interval by the dispersion when the cells scatter more than Poisson (quasi-Poisson)', () => {
    const scattered = [20000, 15000, 11000, 8000, 6000, 4000].map((impressions, i) => ({
      exposure: i + 1,
      impressions,
      clicks: [700, 430, 300, 200, 120, 100][i]!,
    }));
    const { fit, halfLifeExposure, reason } = exposureCurve(scattered);
    expect(fit!.ctrAtFirst).toBeCloseTo(0.03368670442525956, 11);
    expect(fit!.factorPerExposure.estimate).toBeCloseTo(0.9044246114488593, 11);
    expect(fit!.dispersion).toBeCloseTo(2.1372455047488437, 9);
    const se = 0.02316175490949852;
    expect(fit!.factorPerExposure.low).toBeCloseTo(Math.exp(Math.log(0.9044246114488593) - 1.959963984540054 * se), 9);
    expect(halfLifeExposure).toBeCloseTo(7.899985382738661, 8);
    expect(fit!.halfLifeInterval!.low).toBeCloseTo(5.752383616627249, 7);
    expect(fit!.halfLifeInterval!.high).toBeCloseTo(13.588915068415764, 7);
    expect([fit!.levels, fit!.clicks, reason]).toEqual([6, 1850, null]);

    // a fall that is significant under Poisson noise alone but not once the scatter is counted
    const bumpy = [10000, 8000, 6000, 4000, 3000].map((impressions, i) => ({ exposure: i + 1, impressions, clicks: [400, 200, 180, 120, 60][i]! }));
    const curve = exposureCurve(bumpy);
    expect(curve.fit!.factorPerExposure.estimate).toBeCloseTo(0.8792470200583273, 10);
    expect(curve.fit!.dispersion).toBeCloseTo(7.084321215844974, 8);
    expect(curve.fit!.factorPerExposure.high).toBeGreaterThan(1);
    expect([curve.halfLifeExposure, curve.reason]).toEqual([null, 'CTR does not fall significantly with exposure']);
  });

  it('shows an open last bucket ("20 or more") without fitting it', () => {
    const open = [...counts, { exposure: 9, impressions: 9000, clicks: 900 }];
    const curve = exposureCurve(open, { openLast: true });
    expect(curve.points.at(-1)).toMatchObject({ exposure: 9, ctr: 0.1, open: true });
    expect(curve.points.filter((point) => point.open)).toHaveLength(1);
    expect(curve.fit).toEqual(exposureCurve(counts).fit);
    expect(exposureCurve(open).fit!.factorPerExposure.estimate).not.toBeCloseTo(curve.fit!.factorPerExposure.estimate, 3);
  });

  it('says why there is no fit: too few clicks, or a CTR that falls to zero at once', () => {
    const thin = [1, 2, 3, 4].map((exposure) => ({ exposure, impressions: 100, clicks: exposure === 1 ? MIN_EXPOSURE_CLICKS - 1 : 0 }));
    expect(exposureCurve(thin).reason).toBe('not enough data: a fit needs impressions at 3 exposures or more and 20 clicks (has 4 and 19)');
    const cliff = [1, 2, 3, 4].map((exposure) => ({ exposure, impressions: 1000, clicks: exposure === 1 ? 50 : 0 }));
    expect(exposureCurve(cliff)).toMatchObject({ fit: null, halfLifeExposure: null, reason: expect.stringMatching(/does not converge/) });
  });

  const cells = fc
    .array(fc.record({ impressions: fc.integer({ min: 1, max: 50_000 }), clicks: fc.integer({ min: 0, max: 2_000 }) }), { minLength: 3, maxLength: 19 })
    .map((rows): ExposureCount[] => rows.map((row, i) => ({ exposure: i + 1, ...row })));

  it('solves the score equations: fitted clicks add up to the clicks, overall and weighted by exposure (property)', () => {
    fc.assert(
      fc.property(cells, (rows) => {
        const { fit, points } = exposureCurve(rows);
        if (!fit) return;
        let fitted = 0;
        let weighted = 0;
        for (const row of rows) {
          const mu = row.impressions * fit.ctrAtFirst * fit.factorPerExposure.estimate ** (row.exposure - 1);
          fitted += mu;
          weighted += (row.exposure - 1) * mu;
        }
        expect(Math.abs(fitted - fit.clicks) / fit.clicks).toBeLessThan(1e-7);
        const clicksWeighted = rows.reduce((sum, row) => sum + (row.exposure - 1) * row.clicks, 0);
        expect(Math.abs(weighted - clicksWeighted)).toBeLessThan(1e-6 * Math.max(1, clicksWeighted));
        expect(fit.factorPerExposure.low).toBeLessThanOrEqual(fit.factorPerExposure.estimate);
        expect(fit.factorPerExposure.high).toBeGreaterThanOrEqual(fit.factorPerExposure.estimate);
        expect(fit.dispersion).toBeGreaterThanOrEqual(1);
        if (fit.halfLifeExposure !== null) {
          expect(fit.halfLifeInterval!.low).toBeLessThanOrEqual(fit.halfLifeExposure);
          expect(fit.halfLifeInterval!.high).toBeGreaterThanOrEqual(fit.halfLifeExposure);
        }
        // the same fit whatever the order the cells come in
        expect(exposureCurve([...rows].reverse()).fit!.ctrAtFirst).toBeCloseTo(fit.ctrAtFirst, 9);
        expect(points.map((point) => point.exposure)).toEqual(rows.map((row) => row.exposure));
      }),
      { numRuns: 300 },
    );
  });

  it('recovers an exact exponential decay, and keeps its estimates when every count is multiplied (property)', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 2, max: 8 }),
        fc.integer({ min: 10, max: 200 }),
        fc.array(fc.integer({ min: 1, max: 40 }), { minLength: 3, maxLength: 6 }),
        fc.integer({ min: 2, max: 5 }),
        (r, q, clicks, multiple) => {
          // clicks / impressions = (1/q) × (1/r)^(k−1) exactly
          const rows = clicks.map((c, i) => ({ exposure: i + 1, impressions: q * r ** i * c, clicks: c }));
          const { fit } = exposureCurve(rows);
          if (clicks.reduce((a, b) => a + b, 0) < MIN_EXPOSURE_CLICKS) {
            expect(fit).toBeNull();
            return;
          }
          expect(fit!.factorPerExposure.estimate).toBeCloseTo(1 / r, 9);
          expect(fit!.ctrAtFirst).toBeCloseTo(1 / q, 9);
          expect(fit!.deviance).toBeCloseTo(0, 6);
          expect(fit!.dispersion).toBe(1);
          const scaled = exposureCurve(rows.map((row) => ({ ...row, impressions: row.impressions * multiple, clicks: row.clicks * multiple }))).fit!;
          expect(scaled.factorPerExposure.estimate).toBeCloseTo(fit!.factorPerExposure.estimate, 9);
          expect(scaled.factorPerExposure.high - scaled.factorPerExposure.low).toBeLessThan(fit!.factorPerExposure.high - fit!.factorPerExposure.low);
        },
      ),
      { numRuns: 200 },
    );
  });
});

// ---------------------------------------------------------------------------------------------
// The table in detector.ts: FATIGUE_TABLE=<creatives per cell> npx vitest run tests/unit/fatigue-detector.test.ts

describe.skipIf(!process.env.FATIGUE_TABLE)('power table (opt-in)', () => {
  it('measures false alarms, detection and delay of a 30 % drop by daily volume', () => {
    const creatives = Number(process.env.FATIGUE_TABLE);
    const rows: string[] = [];
    for (const impressions of [100, 250, 500, 1000, 1500, 2000, 5000]) {
      const falseAlarms = falseAlarmShare(201, creatives, impressions);
      const cells = (['sudden', 'gradual'] as const).map((kind) => {
        const delays = detectionDelays(202, creatives, impressions, kind, 60).sort((a, b) => a - b);
        const median = delays[Math.floor(delays.length / 2)]!;
        const pct = (days: number) => `${Math.round(100 * shareWithin(delays, days))} %`;
        return `${pct(7)} | ${pct(14)} | ${pct(28)} | ${Number.isFinite(median) ? median : '> 60'}`;
      });
      rows.push(`| ${impressions} | ${impressions * 0.02} | ${(100 * falseAlarms).toFixed(1)} % | ${cells.join(' | ')} |`);
    }
    console.log(rows.join('\n'));
  }, 600_000);
});
