import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { bucketOf, CreditPoints, formatDecimal, parseDecimal, toCreditUnits } from '../../scheduled/attribution/credit-points.ts';

const ONE = 10n ** 12n;
const sum = (units: Map<string, bigint>) => [...units.values()].reduce((a, b) => a + b, 0n);
const key = { org: 'o', bucket: '2026-11-25T10:00:00.000Z', currency: 'EUR', dimension: 'campaign', channel: 'a', model: 'linear' };

describe('credit points', () => {
  it('rounds shares to 10^-12 units by largest remainder, summing to exactly one', () => {
    const thirds = toCreditUnits(new Map([['a', 1 / 3], ['b', 1 / 3], ['c', 1 / 3]]));
    expect([...thirds.values()].sort()).toEqual([333333333333n, 333333333333n, 333333333334n]);
    expect(sum(thirds)).toBe(ONE);
    expect(toCreditUnits(new Map([['only', 1]]))).toEqual(new Map([['only', ONE]]));
    expect(toCreditUnits(new Map([['a', 0.4], ['b', 0.6], ['none', 0]]))).toEqual(new Map([['a', 400000000000n], ['b', 600000000000n]]));
  });

  it('sums to exactly one for any shares that sum to one, each within a unit of its share', () => {
    fc.assert(
      fc.property(fc.array(fc.double({ min: 1e-9, max: 1, noNaN: true }), { minLength: 1, maxLength: 60 }), (weights) => {
        const total = weights.reduce((a, b) => a + b, 0);
        const shares = new Map(weights.map((w, i) => [`c${i}`, w / total]));
        const units = toCreditUnits(shares);
        expect(sum(units)).toBe(ONE);
        for (const [channel, share] of shares) expect(Math.abs(Number(units.get(channel) ?? 0n) - share * 1e12)).toBeLessThanOrEqual(1.000001);
      }),
    );
  });

  it('reads and writes decimals exactly', () => {
    for (const text of ['0', '12.34', '-5', '-0.001', '123456789012345678901234.5678']) expect(formatDecimal(parseDecimal(text))).toBe(text);
    expect(formatDecimal(parseDecimal('1.500'))).toBe('1.5');
    expect(() => parseDecimal('1e3')).toThrow();
    expect(() => parseDecimal('NaN')).toThrow();
  });

  it('sums credits and values per point exactly; a withdrawal cancels to zero', () => {
    const points = new CreditPoints();
    points.add(key, 333333333333n, '99999999999999999.99');
    points.add(key, 666666666667n, '0.01');
    points.add({ ...key, channel: 'b' }, ONE, null);
    const columns = points.columns();
    expect(columns.conversions).toEqual(['1', '1']);
    // 0.333333333333 × 99999999999999999.99 + 0.666666666667 × 0.01, digit for digit (Python's decimal agrees)
    expect(columns.values).toEqual(['33333333333300000.00333333333334', null]);
    points.add(key, -333333333333n, '99999999999999999.99');
    points.add(key, -666666666667n, '0.01');
    expect(points.columns().conversions[0]).toBe('0');
    expect(points.columns().values[0]).toBe('0');
  });

  it('buckets a time as date_bin(15 minutes) from 2000-01-01 does', () => {
    expect(bucketOf(Date.parse('2026-11-25T10:14:59.999Z'))).toBe('2026-11-25T10:00:00.000Z');
    expect(bucketOf(Date.parse('2026-11-25T10:15:00.000Z'))).toBe('2026-11-25T10:15:00.000Z');
  });
});
