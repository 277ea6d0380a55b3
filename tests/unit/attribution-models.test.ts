import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  RULE_MODELS,
  bootstrapIntervals,
  markovCredits,
  markovRemovalEffects,
  mulberry32,
  ruleCredits,
  shapleyCredits,
  type ChannelPath,
  type Touch,
} from '../../scheduled/attribution/models.ts';

const DAY = 86_400_000;
const T0 = Date.UTC(2026, 0, 31);
const touch = (channel: string, daysBefore: number, kind: Touch['kind'] = 'click'): Touch => ({ at: T0 - daysBefore * DAY, kind, channel });
const paths = (...lists: string[][]): ChannelPath[] => lists.map((channels) => ({ channels }));
const sum = (values: Iterable<number>) => [...values].reduce((total, value) => total + value, 0);

function expectClose(actual: readonly number[], expected: readonly number[]) {
  expect(actual).toHaveLength(expected.length);
  actual.forEach((value, i) => expect(value).toBeCloseTo(expected[i]!, 14));
}

function expectMapClose(actual: Map<string, number>, expected: Record<string, number>) {
  expect([...actual.keys()].sort()).toEqual(Object.keys(expected).sort());
  for (const [key, value] of Object.entries(expected)) expect(actual.get(key)).toBeCloseTo(value, 12);
}

/**
 * The reference: the chain's probabilities built from scratch, and one dense Gaussian
 * elimination (partial pivoting) per removal, on the textbook formulation (I − Q) x = r.
 */
function bruteForceMarkov(converting: readonly ChannelPath[], nonConverting: readonly ChannelPath[]) {
  const names = [...new Set([...converting, ...nonConverting].flatMap((path) => path.channels))];
  const state = new Map(names.map((name, i) => [name, i + 1]));
  const n = names.length + 1;
  const counts = Array.from({ length: n }, () => new Array<number>(n + 2).fill(0)); // columns n: CONV, n+1: NULL
  const walk = (path: ChannelPath, end: number) => {
    if (path.channels.length === 0) return;
    let from = 0;
    for (const channel of path.channels) {
      const to = state.get(channel)!;
      counts[from]![to]! += 1;
      from = to;
    }
    counts[from]![end]! += 1;
  };
  converting.forEach((path) => walk(path, n));
  nonConverting.forEach((path) => walk(path, n + 1));
  const probability = counts.map((row) => {
    const total = sum(row);
    return row.map((count) => (total === 0 ? 0 : count / total));
  });
  const conversionFromStart = (removed: number | null) => {
    // augmented [I − Q | r], column `removed` of Q zeroed
    const a = probability.map((row, i) => [...row.slice(0, n).map((q, j) => (i === j ? 1 : 0) - (j === removed ? 0 : q)), row[n]!]);
    for (let k = 0; k < n; k++) {
      let pivotRow = k;
      for (let i = k + 1; i < n; i++) if (Math.abs(a[i]![k]!) > Math.abs(a[pivotRow]![k]!)) pivotRow = i;
      [a[k], a[pivotRow]] = [a[pivotRow]!, a[k]!];
      for (let i = k + 1; i < n; i++) {
        const factor = a[i]![k]! / a[k]![k]!;
        for (let j = k; j <= n; j++) a[i]![j]! -= factor * a[k]![j]!;
      }
    }
    const x = new Array<number>(n).fill(0);
    for (let i = n - 1; i >= 0; i--) {
      let value = a[i]![n]!;
      for (let j = i + 1; j < n; j++) value -= a[i]![j]! * x[j]!;
      x[i] = value / a[i]![i]!;
    }
    return x[0]!;
  };
  const conversionProbability = converting.some((path) => path.channels.length > 0) ? conversionFromStart(null) : 0;
  const removed = new Map(names.map((name) => [name, conversionProbability > 0 ? conversionFromStart(state.get(name)!) : 0]));
  return { conversionProbability, removed };
}

function expectMatchesBruteForce(converting: readonly ChannelPath[], nonConverting: readonly ChannelPath[]) {
  const exact = markovRemovalEffects(converting, nonConverting);
  const reference = bruteForceMarkov(converting, nonConverting);
  const p = reference.conversionProbability;
  expect(Math.abs(exact.conversionProbability - p)).toBeLessThanOrEqual(1e-9 * p);
  expect([...exact.removalEffects.keys()].sort()).toEqual([...reference.removed.keys()].sort());
  for (const [channel, removedProbability] of reference.removed) {
    const effect = exact.removalEffects.get(channel)!;
    const expected = p > 0 ? 1 - removedProbability / p : 0;
    // P(conv | removed) to 1e-9 of P(conv); the effect to 1e-9 relative (the reference's own 1 − a/b rounds near 1e-16)
    expect(Math.abs(p * (1 - effect) - removedProbability)).toBeLessThanOrEqual(1e-9 * p);
    expect(Math.abs(effect - expected)).toBeLessThanOrEqual(1e-9 * expected + 1e-14);
  }
}

/** Random small chains: paths over a few channels, at least one converting. */
const channelName = (alphabet: number) => fc.integer({ min: 0, max: alphabet - 1 }).map((i) => `ch${i}`);
const smallChain = fc.integer({ min: 1, max: 7 }).chain((alphabet) =>
  fc.record({
    converting: fc.array(fc.array(channelName(alphabet), { minLength: 1, maxLength: 6 }), { minLength: 1, maxLength: 12 }),
    nonConverting: fc.array(fc.array(channelName(alphabet), { minLength: 0, maxLength: 6 }), { maxLength: 12 }),
  }),
);

describe('rule models', () => {
  const three = [touch('a', 10), touch('b', 5, 'view'), touch('c', 1)];

  it('give last, first and linear credit by position', () => {
    expect(ruleCredits('last_touch', three, T0)).toEqual([0, 0, 1]);
    expect(ruleCredits('first_touch', three, T0)).toEqual([1, 0, 0]);
    expectClose(ruleCredits('linear', three, T0), [1 / 3, 1 / 3, 1 / 3]);
  });

  it('give position-based 100 % to one touch, 50/50 to two, 40/20/40 beyond', () => {
    expect(ruleCredits('position_based', [touch('a', 1)], T0)).toEqual([1]);
    expect(ruleCredits('position_based', [touch('a', 2), touch('b', 1)], T0)).toEqual([0.5, 0.5]);
    expectClose(ruleCredits('position_based', three, T0), [0.4, 0.2, 0.4]);
    const five = [touch('a', 5), touch('b', 4), touch('c', 3), touch('d', 2), touch('e', 1)];
    expectClose(ruleCredits('position_based', five, T0), [0.4, 0.2 / 3, 0.2 / 3, 0.2 / 3, 0.4]);
  });

  it('halve time-decay weight every 7 days by default, or every half-life given', () => {
    const path = [touch('a', 14), touch('b', 7), touch('c', 0)];
    // weights 1/4, 1/2, 1 over 7/4
    expectClose(ruleCredits('time_decay', path, T0), [1 / 7, 2 / 7, 4 / 7]);
    const halfLife14 = [0.5, Math.SQRT1_2, 1];
    expectClose(ruleCredits('time_decay', path, T0, { halfLifeDays: 14 }), halfLife14.map((w) => w / sum(halfLife14)));
    // the same touches one day earlier relative to the conversion: shares do not move
    expectClose(ruleCredits('time_decay', path, T0 + DAY), [1 / 7, 2 / 7, 4 / 7]);
  });

  it('keep time decay finite where every weight would underflow', () => {
    // 2^(−90 / 0.001) underflows to 0 for both touches; measured from the youngest, the weights are 2^-1000 and 1
    const credits = ruleCredits('time_decay', [touch('a', 90), touch('b', 89)], T0, { halfLifeDays: 0.001 });
    expect(credits[1]).toBe(1);
    expect(credits[0]).toBeCloseTo(2 ** -1000, 315);
    expectClose(ruleCredits('time_decay', [touch('a', 3), touch('b', 3)], T0, { halfLifeDays: 1e-9 }), [0.5, 0.5]);
  });

  it('give nothing to no touch, and refuse a half-life that is not positive', () => {
    for (const model of RULE_MODELS) expect(ruleCredits(model, [], T0)).toEqual([]);
    expect(() => ruleCredits('time_decay', three, T0, { halfLifeDays: 0 })).toThrow(RangeError);
    expect(() => ruleCredits('time_decay', three, T0, { halfLifeDays: Number.NaN })).toThrow(RangeError);
  });

  it('credit every converting path in full, never negative (property)', () => {
    const touches = fc.array(
      fc.record({ at: fc.integer({ min: T0 - 90 * DAY, max: T0 }), kind: fc.constantFrom<Touch['kind']>('click', 'view'), channel: fc.string({ maxLength: 3 }) }),
      { minLength: 1, maxLength: 40 },
    );
    fc.assert(
      fc.property(fc.constantFrom(...RULE_MODELS), touches, fc.double({ min: 0.01, max: 60, noNaN: true }), (model, path, halfLifeDays) => {
        const sorted = [...path].sort((a, b) => a.at - b.at);
        const credits = ruleCredits(model, sorted, T0, { halfLifeDays });
        expect(credits).toHaveLength(sorted.length);
        for (const credit of credits) expect(credit).toBeGreaterThanOrEqual(0);
        expect(Math.abs(sum(credits) - 1)).toBeLessThan(1e-12);
      }),
    );
  });
});

describe('Markov removal effects', () => {
  it('match a chain solved by hand', () => {
    // START→A 2/3, START→B 1/3; A→B 1/2, A→NULL 1/2; B→CONV 1. P(conv) = 2/3·1/2 + 1/3 = 2/3.
    // Without A: 1/3, effect 1/2. Without B: 0, effect 1. Two conversions split 1/2 : 1.
    const converting = paths(['A', 'B'], ['B']);
    const nonConverting = paths(['A']);
    const { conversionProbability, removalEffects } = markovRemovalEffects(converting, nonConverting);
    expect(conversionProbability).toBeCloseTo(2 / 3, 15);
    expectMapClose(removalEffects, { A: 0.5, B: 1 });
    expectMapClose(markovCredits(converting, nonConverting), { A: 2 / 3, B: 4 / 3 });
  });

  it('follow cycles and repeats of a channel', () => {
    // A→B 1/2, A→CONV 1/2, B→A 1/2, B→NULL 1/2, START→A = START→B = 1/2:
    // x_A = 1/2 x_B + 1/2, x_B = 1/2 x_A → x_A = 2/3, x_B = 1/3, P(conv) = 1/2.
    // Without A: 0 (effect 1). Without B: x_A = 1/2, P = 1/4 (effect 1/2).
    const cycle = markovRemovalEffects(paths(['A', 'B', 'A']), paths(['B']));
    expect(cycle.conversionProbability).toBeCloseTo(0.5, 15);
    expectMapClose(cycle.removalEffects, { A: 1, B: 0.5 });
    expectMapClose(markovCredits(paths(['A', 'B', 'A']), paths(['B'])), { A: 2 / 3, B: 1 / 3 });
    // a repeat is a transition A→A: A→A 1/3, A→CONV 1/3, A→NULL 1/3, so x_A = 1/2
    const repeat = markovRemovalEffects(paths(['A', 'A']), paths(['A']));
    expect(repeat.conversionProbability).toBeCloseTo(0.5, 15);
    expectMapClose(repeat.removalEffects, { A: 1 });
  });

  it('weigh credit by value, and leave empty paths out of the chain and the total', () => {
    const converting: ChannelPath[] = [{ channels: ['A', 'B'], value: 30 }, { channels: ['B'], value: 10 }, { channels: [], value: 1000 }];
    const nonConverting = paths(['A'], []);
    expectMapClose(markovCredits(converting, nonConverting), { A: 40 / 3, B: 80 / 3 });
    expect(markovRemovalEffects(converting, nonConverting).conversionProbability).toBeCloseTo(2 / 3, 15);
  });

  it('give 0 to a channel that never leads to a conversion, and credit one that leads there through others', () => {
    // D only ever ends a path without conversion; E is followed by B, which converts
    const converting = paths(['A', 'B'], ['B']);
    const nonConverting = paths(['D'], ['A', 'D'], ['E', 'B']);
    const { removalEffects } = markovRemovalEffects(converting, nonConverting);
    expect(removalEffects.get('D')).toBe(0);
    expect(removalEffects.get('E')).toBeGreaterThan(0);
    const credits = markovCredits(converting, nonConverting);
    expect(credits.has('D')).toBe(false);
    expect(credits.get('E')).toBeGreaterThan(0);
    expectMatchesBruteForce(converting, nonConverting);
  });

  it('answer P(conv) = 0, every effect 0 and no credit when nothing converts', () => {
    const none = markovRemovalEffects([], paths(['A', 'B'], ['B']));
    expect(none.conversionProbability).toBe(0);
    expect(Object.fromEntries(none.removalEffects)).toEqual({ A: 0, B: 0 });
    expect(markovCredits([], paths(['A']))).toEqual(new Map());
    expect(markovRemovalEffects([], [])).toEqual({ conversionProbability: 0, removalEffects: new Map() });
    expect(markovCredits(paths([]), [])).toEqual(new Map());
  });

  it('give every channel full effect when every path converts through all of them', () => {
    const { conversionProbability, removalEffects } = markovRemovalEffects(paths(['A', 'B', 'C'], ['A', 'B', 'C']), []);
    expect(conversionProbability).toBe(1);
    expect(Object.fromEntries(removalEffects)).toEqual({ A: 1, B: 1, C: 1 });
  });

  it('are exact against one dense solve per removal on random small chains (property)', () => {
    fc.assert(fc.property(smallChain, ({ converting, nonConverting }) => expectMatchesBruteForce(paths(...converting), paths(...nonConverting))), { numRuns: 300 });
  });

  it('are exact against one dense solve per removal with 150 channels and cycles', () => {
    const random = mulberry32(7);
    const pick = () => `c${Math.floor(random() ** 2 * 150)}`; // skewed, so some channels are rare
    const draw = () => Array.from({ length: 1 + Math.floor(random() * 6) }, pick);
    const converting = paths(...Array.from({ length: 3000 }, draw));
    const nonConverting = paths(...Array.from({ length: 6000 }, draw));
    expectMatchesBruteForce(converting, nonConverting);
  });

  it('do not depend on the channels’ names or the order of the paths (property)', () => {
    const chainAndRenaming = smallChain.chain((chain) =>
      fc.record({ chain: fc.constant(chain), names: fc.shuffledSubarray([...Array(7).keys()].map((i) => `renamed-${i}`), { minLength: 7, maxLength: 7 }), reverse: fc.boolean() }),
    );
    fc.assert(
      fc.property(chainAndRenaming, ({ chain, names, reverse }) => {
        const rename = (list: string[][]) => list.map((channels) => ({ channels: channels.map((c) => names[Number(c.slice(2))]!) }));
        const order = <T>(list: T[]) => (reverse ? [...list].reverse() : list);
        const original = markovRemovalEffects(paths(...chain.converting), paths(...chain.nonConverting));
        const renamed = markovRemovalEffects(order(rename(chain.converting)), order(rename(chain.nonConverting)));
        expect(renamed.conversionProbability).toBeCloseTo(original.conversionProbability, 12);
        expect(renamed.removalEffects.size).toBe(original.removalEffects.size);
        for (const [channel, effect] of original.removalEffects) expect(renamed.removalEffects.get(names[Number(channel.slice(2))]!)).toBeCloseTo(effect, 12);
      }),
      { numRuns: 200 },
    );
  });

  it('share out exactly the attributed total, with effects between 0 and 1 (property)', () => {
    const valued = smallChain.chain((chain) => fc.record({ chain: fc.constant(chain), values: fc.array(fc.double({ min: 0.01, max: 1000, noNaN: true }), { minLength: 12, maxLength: 12 }) }));
    fc.assert(
      fc.property(valued, ({ chain, values }) => {
        const converting = chain.converting.map((channels, i) => ({ channels, value: values[i]! }));
        const credits = markovCredits(converting, paths(...chain.nonConverting));
        const total = sum(converting.map((path) => path.value));
        expect(Math.abs(sum(credits.values()) - total)).toBeLessThanOrEqual(1e-9 * total);
        for (const effect of markovRemovalEffects(converting, paths(...chain.nonConverting)).removalEffects.values()) {
          expect(effect).toBeGreaterThanOrEqual(0);
          expect(effect).toBeLessThanOrEqual(1);
        }
      }),
    );
  });
});

describe('simplified Shapley', () => {
  it('splits each path’s value among its distinct channels', () => {
    const converting: ChannelPath[] = [{ channels: ['A', 'B', 'A'], value: 10 }, { channels: ['B'], value: 5 }, { channels: ['C', 'B'] }, { channels: [], value: 99 }];
    // A: 10/2; B: 10/2 + 5 + 1/2; C: 1/2; the empty path credits no one
    expectMapClose(shapleyCredits(converting), { A: 5, B: 10.5, C: 0.5 });
    expect(shapleyCredits([])).toEqual(new Map());
  });

  it('is efficient: the credits add up to the total value (property)', () => {
    const valued = fc.array(fc.record({ channels: fc.array(channelName(30), { minLength: 1, maxLength: 8 }), value: fc.double({ min: 1e-6, max: 1e6, noNaN: true }) }), { maxLength: 50 });
    fc.assert(
      fc.property(valued, (converting) => {
        const total = sum(converting.map((path) => path.value));
        expect(Math.abs(sum(shapleyCredits(converting).values()) - total)).toBeLessThanOrEqual(1e-9 * total);
      }),
    );
  });

  it('is symmetric: two channels that always appear together get the same credit (property)', () => {
    // the token 'XY' becomes X and Y, in either order, apart or side by side
    const token = fc.oneof(channelName(5), fc.constant('XY'));
    const path = fc.record({ tokens: fc.array(token, { minLength: 1, maxLength: 6 }), yFirst: fc.boolean(), value: fc.double({ min: 0.5, max: 100, noNaN: true }) });
    fc.assert(
      fc.property(fc.array(path, { minLength: 1, maxLength: 30 }), (generated) => {
        const converting = generated.map(({ tokens, yFirst, value }) => {
          const channels = tokens.flatMap((t) => (t === 'XY' ? ['X'] : [t]));
          if (tokens.includes('XY')) channels.splice(yFirst ? 0 : channels.length, 0, 'Y');
          return { channels, value };
        });
        const credits = shapleyCredits(converting);
        expect(credits.get('X')).toBe(credits.get('Y'));
      }),
    );
  });
});

describe('bootstrap intervals', () => {
  const random = mulberry32(3);
  const draw = (channels: number) => Array.from({ length: 1 + Math.floor(random() * 4) }, () => `c${Math.floor(random() * channels)}`);
  const converting = paths(...Array.from({ length: 400 }, () => draw(6)));
  const nonConverting = paths(...Array.from({ length: 800 }, () => draw(6)));

  it('are reproducible by seed, ordered, and hold the point estimate', () => {
    for (const model of ['markov', 'shapley'] as const) {
      const point = model === 'markov' ? markovCredits(converting, nonConverting) : shapleyCredits(converting);
      const intervals = bootstrapIntervals(model, converting, nonConverting, { level: 0.9, seed: 42 });
      expect(bootstrapIntervals(model, converting, nonConverting, { level: 0.9, seed: 42 })).toEqual(intervals);
      expect(bootstrapIntervals(model, converting, nonConverting, { level: 0.9, seed: 43 })).not.toEqual(intervals);
      expect([...intervals.keys()].sort()).toEqual([...point.keys()].sort());
      for (const [channel, { low, high }] of intervals) {
        expect(low).toBeLessThan(high);
        expect(low).toBeLessThanOrEqual(point.get(channel)!);
        expect(high).toBeGreaterThanOrEqual(point.get(channel)!);
      }
      // a wider level gives a wider interval
      const wide = bootstrapIntervals(model, converting, nonConverting, { level: 0.99, seed: 42 });
      for (const [channel, { low, high }] of intervals) {
        expect(wide.get(channel)!.low).toBeLessThanOrEqual(low);
        expect(wide.get(channel)!.high).toBeGreaterThanOrEqual(high);
      }
    }
  });

  it('equal a plain bootstrap: the same draws over the paths themselves, each sample credited from scratch', () => {
    const quantile = (values: number[], q: number) => {
      const sorted = [...values].sort((a, b) => a - b);
      const h = (sorted.length - 1) * q;
      return sorted[Math.floor(h)]! + (h - Math.floor(h)) * (sorted[Math.ceil(h)]! - sorted[Math.floor(h)]!);
    };
    const valued = converting.map((path, i) => ({ ...path, value: 1 + (i % 3) }));
    for (const model of ['markov', 'shapley'] as const) {
      const random = mulberry32(9);
      const draw = (list: ChannelPath[]) => Array.from(list, () => list[Math.floor(random() * list.length)]!);
      const samples = Array.from({ length: 60 }, () => {
        const conv = draw(valued);
        const nonConv = model === 'markov' ? draw(nonConverting) : [];
        return model === 'markov' ? markovCredits(conv, nonConv) : shapleyCredits(conv);
      });
      const intervals = bootstrapIntervals(model, valued, nonConverting, { level: 0.8, samples: 60, seed: 9 });
      expect(intervals.size).toBe(6);
      for (const [channel, { low, high }] of intervals) {
        const credits = samples.map((credit) => credit.get(channel) ?? 0);
        expect(low).toBeCloseTo(quantile(credits, 0.1), 9);
        expect(high).toBeCloseTo(quantile(credits, 0.9), 9);
      }
    }
  });

  it('keep paths with the same channels but different values apart', () => {
    const converting: ChannelPath[] = Array.from({ length: 100 }, (_, i) => ({ channels: ['A'], value: i % 2 === 0 ? 1 : 3 }));
    const { low, high } = bootstrapIntervals('shapley', converting, [], { level: 0.9 }).get('A')!;
    expect(low).toBeLessThan(200);
    expect(high).toBeGreaterThan(200);
  });

  it('narrow as the paths multiply', () => {
    /** the interval's width relative to the credit */
    const width = (times: number) => {
      const many = Array.from({ length: times }, () => converting).flat();
      const { low, high } = bootstrapIntervals('shapley', many, [], { level: 0.9, samples: 100 }).get('c0')!;
      return (high - low) / shapleyCredits(many).get('c0')!;
    };
    // √16 = 4 times narrower, give or take the sampling noise
    expect(width(16) / width(1)).toBeGreaterThan(0.15);
    expect(width(16) / width(1)).toBeLessThan(0.35);
  });

  it('collapse to the point when every path is the same', () => {
    const same: ChannelPath[] = Array.from({ length: 50 }, () => ({ channels: ['A', 'B'], value: 2 }));
    expect(Object.fromEntries(bootstrapIntervals('shapley', same, [], { level: 0.9 }))).toEqual({ A: { low: 50, high: 50 }, B: { low: 50, high: 50 } });
    // S→A 52, A→B 50, A→NULL 2, B→CONV 50: each channel's removal stops every conversion, so 50 each
    const markov = bootstrapIntervals('markov', same, paths(['A'], ['A']), { level: 0.8, samples: 20 });
    for (const channel of ['A', 'B']) {
      expect(markov.get(channel)!.low).toBeCloseTo(50, 12);
      expect(markov.get(channel)!.high).toBeCloseTo(50, 12);
    }
    expect(bootstrapIntervals('markov', [], paths(['A']), { level: 0.9 })).toEqual(new Map());
  });

  it('refuse a level outside (0, 1) or a sample count that is not a positive integer', () => {
    expect(() => bootstrapIntervals('shapley', converting, [], { level: 1 })).toThrow(/level/);
    expect(() => bootstrapIntervals('shapley', converting, [], { level: 0.9, samples: 0 })).toThrow(/samples/);
  });
});
