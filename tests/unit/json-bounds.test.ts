import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { boundedJson, inspectJson, isStorableText, jsonDepth, storableText } from '../../core/events/json-bounds.ts';

const bounds = { maxDepth: 6, maxNodes: 1000 };

describe('bounds on untrusted JSON', () => {
  it('finds NUL, unpaired surrogates (in values and keys), overflowing numbers, depth and size, by path', () => {
    expect(inspectJson({ a: 'ok', b: ['x', 'y\u0000'] }, bounds)).toMatchObject({ code: 'invalid_characters', path: 'b.1' });
    expect(inspectJson({ a: { '\ud800': 1 } }, bounds)).toMatchObject({ code: 'invalid_characters', path: 'a.\uFFFD' });
    expect(inspectJson({ v: JSON.parse('1e400') }, bounds)).toMatchObject({ code: 'invalid_number', path: 'v' });
    expect(inspectJson(JSON.parse('{"p":' + '['.repeat(20) + ']'.repeat(20) + '}'), bounds)).toMatchObject({ code: 'too_deep' });
    expect(inspectJson(Array.from({ length: 2000 }, () => 1), bounds)).toMatchObject({ code: 'too_large' });
    expect(inspectJson({ fine: ['\ud83d\ude00', 1.5, null, true, { x: 'é' }] }, bounds)).toBeNull();
  });

  it('walks JSON nested far beyond any call stack without throwing', () => {
    const deep = JSON.parse('['.repeat(100_000) + ']'.repeat(100_000));
    expect(inspectJson(deep, bounds)).toMatchObject({ code: 'too_deep' });
    expect(jsonDepth(deep)).toBe(100_000);
    expect(() => boundedJson(deep)).not.toThrow();
    expect(boundedJson(deep).length).toBeLessThan(100);
  });

  it('makes any string storable, and keeps storable strings as they are (property)', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary' }), (text) => {
        const stored = storableText(text);
        expect(isStorableText(stored)).toBe(true);
        if (isStorableText(text)) expect(stored).toBe(text);
      }),
      { numRuns: 500 },
    );
  });

  it('accepts exactly the values whose strings and keys are all storable, within the bounds (property)', () => {
    const strings = (value: unknown): string[] =>
      typeof value === 'string' ? [value]
        : value === null || typeof value !== 'object' ? []
          : Object.entries(value).flatMap(([key, child]) => [...(Array.isArray(value) ? [] : [key]), ...strings(child)]);
    fc.assert(
      fc.property(fc.jsonValue({ maxDepth: 4, stringUnit: 'binary' }), (value) => {
        const problem = inspectJson(value, { maxDepth: 10, maxNodes: 100_000 });
        expect(problem === null).toBe(strings(value).every(isStorableText));
        // what boundedJson writes is always parseable JSON
        expect(() => JSON.parse(boundedJson(value))).not.toThrow();
      }),
      { numRuns: 300 },
    );
  });
});
