import { describe, expect, it } from 'vitest';
import { digestsEqual, displayPrefix, generateKey, hashKey, kindOfKey } from '../../core/keys.ts';
import { hexEqual, hmacHex } from '../../core/secrets.ts';

describe('API keys', () => {
  it('generates prefixed, base62, distinct keys', () => {
    const keys = new Set(Array.from({ length: 200 }, () => generateKey('secret')));
    expect(keys.size).toBe(200);
    for (const key of keys) expect(key).toMatch(/^sk_[0-9A-Za-z]{32}$/);
    expect(generateKey('publishable')).toMatch(/^pk_/);
    expect(generateKey('postback')).toMatch(/^pb_/);
  });

  it('uses every character of the alphabet about evenly', () => {
    const counts = new Map<string, number>();
    for (let i = 0; i < 2000; i += 1) {
      for (const ch of generateKey('secret').slice(3)) counts.set(ch, (counts.get(ch) ?? 0) + 1);
    }
    expect(counts.size).toBe(62);
    const expected = (2000 * 32) / 62;
    for (const count of counts.values()) expect(Math.abs(count - expected) / expected).toBeLessThan(0.15);
  });

  it('hashes with SHA-256 (known vector)', async () => {
    expect(hashKey('abc')).toBe('ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
  });

  it('tells kinds apart and refuses what is not a key', () => {
    expect(kindOfKey(generateKey('publishable'))).toBe('publishable');
    expect(kindOfKey(generateKey('secret'))).toBe('secret');
    expect(kindOfKey('sk_short')).toBeNull();
    expect(kindOfKey('xx_' + 'a'.repeat(32))).toBeNull();
    expect(displayPrefix('sk_AbCdEfGh')).toBe('sk_AbCdE');
  });

  it('compares digests without short-circuiting on the first difference', () => {
    expect(digestsEqual('abcd', 'abcd')).toBe(true);
    expect(digestsEqual('abcd', 'abce')).toBe(false);
    expect(digestsEqual('abcd', 'abc')).toBe(false);
    expect(digestsEqual('é', 'a')).toBe(false); // one character each, not one byte each: no throw
    expect(digestsEqual(hashKey('k'), hashKey('k'))).toBe(true);
  });

  it('compares hex signatures in constant time, refusing what is not hex of the same length', () => {
    const signature = hmacHex('secret', 'message');
    expect(hexEqual(signature, hmacHex('secret', 'message'))).toBe(true);
    expect(hexEqual(signature.toUpperCase(), signature)).toBe(true); // the same bytes
    expect(hexEqual(signature, hmacHex('secret', 'other'))).toBe(false);
    for (const bad of ['', signature.slice(1), signature.slice(2), `${signature}00`, `${signature.slice(0, -1)}g`, `${signature.slice(0, -1)}é`]) {
      expect([bad, hexEqual(bad, signature)]).toEqual([bad, false]);
    }
  });
});
