import { describe, expect, it } from 'vitest';
import { parseLimitsConfig, parseNodeConfig } from '../../core/config.ts';
import { PreciseError } from '../../core/errors.ts';
import { addressKey, bindingLimiter, parseRateSpec, TokenBucketLimiter } from '../../core/rate-limit.ts';
import { TtlCache, TtlCacheEntries } from '../../core/ttl-cache.ts';

describe('token bucket limiter', () => {
  it('allows a burst of N, then refills at N per period', () => {
    let now = 0;
    const limiter = new TokenBucketLimiter({ limit: 10, periodSeconds: 10 }, { now: () => now });
    const burst = Array.from({ length: 12 }, () => limiter.take('a').ok);
    expect(burst).toEqual([...Array(10).fill(true), false, false]);
    expect(limiter.take('a').retryAfterSeconds).toBe(1);
    now += 1000; // one token back
    expect(limiter.take('a').ok).toBe(true);
    expect(limiter.take('a').ok).toBe(false);
    now += 60_000; // never more than the burst
    expect(Array.from({ length: 11 }, () => limiter.take('a').ok).filter(Boolean)).toHaveLength(10);
    expect(limiter.take('b').ok).toBe(true);
  });

  it('says when to come back, in whole seconds', () => {
    const limiter = new TokenBucketLimiter({ limit: 2, periodSeconds: 60 }, { now: () => 0 });
    limiter.take('a');
    limiter.take('a');
    expect(limiter.take('a')).toEqual({ ok: false, retryAfterSeconds: 30 });
  });

  it('stays bounded, forgetting the least recently used key', () => {
    let now = 0;
    const limiter = new TokenBucketLimiter({ limit: 1, periodSeconds: 60 }, { maxKeys: 3, now: () => now });
    for (const key of ['a', 'b', 'c']) limiter.take(key);
    now += 1;
    expect(limiter.take('a').ok).toBe(false); // a is now the most recent
    limiter.take('d'); // evicts b
    expect(limiter.size).toBe(3);
    expect(limiter.take('a').ok).toBe(false);
    expect(limiter.take('b').ok).toBe(true); // forgotten: a fresh bucket
  });

  it('reads a binding’s yes or no, with its period as Retry-After', async () => {
    const seen: string[] = [];
    const limiter = bindingLimiter({ limit: async ({ key }) => (seen.push(key), { success: seen.length <= 1 }) }, 10);
    expect(await limiter.take('k')).toEqual({ ok: true, retryAfterSeconds: 0 });
    expect(await limiter.take('k')).toEqual({ ok: false, retryAfterSeconds: 10 });
    expect(seen).toEqual(['k', 'k']);
  });
});

describe('rate specs and the configuration', () => {
  it('parses N/Ss and off, and refuses anything else', () => {
    expect(parseRateSpec('50/10s')).toEqual({ limit: 50, periodSeconds: 10 });
    expect(parseRateSpec('off')).toBeNull();
    for (const bad of ['50', '50/10', '0/10s', '5/0s', '-1/1s', '1e3/1s']) expect(() => parseRateSpec(bad)).toThrow(PreciseError);
  });

  it('has generous per-key and per-address defaults and a trickle for unknown keys', () => {
    const config = parseNodeConfig({});
    expect(config.RATE_LIMIT_ADDRESS).toEqual({ limit: 20_000, periodSeconds: 1 });
    expect(config.RATE_LIMIT_KEY).toEqual({ limit: 20_000, periodSeconds: 1 });
    expect(config.RATE_LIMIT_KEY_LOOKUPS_PER_ADDRESS).toEqual({ limit: 50, periodSeconds: 10 });
    expect(config.RATE_LIMIT_KEY_LOOKUPS).toEqual({ limit: 300, periodSeconds: 10 });
    expect(config.CORS_ORIGINS).toEqual([]);
    expect(config).toMatchObject({ HTTP_HEADERS_TIMEOUT_MS: 10_000, HTTP_REQUEST_TIMEOUT_MS: 30_000, HTTP_KEEP_ALIVE_TIMEOUT_MS: 5_000, HTTP_MAX_CONNECTIONS: 10_000 });
  });

  it('names the variable of a bad value', () => {
    const fieldOf = (env: Record<string, string>) => {
      try {
        parseNodeConfig(env);
        return 'accepted';
      } catch (error) {
        return (error as PreciseError).details.field;
      }
    };
    expect(fieldOf({ RATE_LIMIT_KEY: '100 per second' })).toBe('RATE_LIMIT_KEY');
    expect(fieldOf({ HTTP_MAX_CONNECTIONS: '0' })).toBe('HTTP_MAX_CONNECTIONS');
    expect(fieldOf({ CORS_ORIGINS: 'https://ok.example, not an origin' })).toBe('CORS_ORIGINS');
    expect(parseLimitsConfig({ CORS_ORIGINS: 'https://a.example, http://localhost:3000', RATE_LIMIT_ADDRESS: 'off' })).toMatchObject({
      CORS_ORIGINS: ['https://a.example', 'http://localhost:3000'],
      RATE_LIMIT_ADDRESS: null,
    });
  });
});

describe('address keys', () => {
  it('keys IPv4 as is, IPv6 by its /64, IPv4-mapped IPv6 as IPv4', () => {
    expect(addressKey('203.0.113.7')).toBe('203.0.113.7');
    expect(addressKey('::ffff:203.0.113.7')).toBe('203.0.113.7');
    expect(addressKey('2001:db8:1:2::1')).toBe('2001:db8:1:2::/64');
    expect(addressKey('2001:0DB8:0001:0002:ffff:ffff:ffff:ffff')).toBe('2001:db8:1:2::/64');
    expect(addressKey('2001:db8::1')).toBe('2001:db8:0:0::/64');
    expect(addressKey('::1')).toBe('0:0:0:0::/64');
    expect(addressKey('2001:db8:1:3::1')).not.toBe(addressKey('2001:db8:1:2::1'));
    expect(addressKey('::ffff:cb00:7107')).toBe('203.0.113.7');
    expect(addressKey('fe80::1%eth0')).toBe('fe80:0:0:0::/64');
    expect(addressKey(' Not-An-IP ')).toBe('not-an-ip'); // still a key of its own
  });
});

describe('TTL cache: misses apart from hits', () => {
  const loader = (valid: Set<string>) => {
    const loads: string[] = [];
    return { loads, load: async (key: string) => (loads.push(key), valid.has(key) ? { key } : null) };
  };

  it('a flood of misses evicts only misses', async () => {
    const { loads, load } = loader(new Set(['real']));
    const cache = new TtlCache(load, { maxEntries: 2, maxNegativeEntries: 2 });
    await cache.get('real');
    for (let i = 0; i < 100; i += 1) await cache.get(`fake-${i}`);
    expect(await cache.get('real')).toEqual({ key: 'real' });
    expect(loads.filter((key) => key === 'real')).toHaveLength(1);
    await cache.get('fake-99'); // the newest miss is still cached
    await cache.get('fake-0'); // the oldest was evicted from the miss map
    expect(loads.filter((key) => key === 'fake-99')).toHaveLength(1);
    expect(loads.filter((key) => key === 'fake-0')).toHaveLength(2);
  });

  it('asks admission only for never-seen keys, and refuses the load when it throws', async () => {
    let now = 0;
    const { loads, load } = loader(new Set(['real']));
    const cache = new TtlCache(load, { ttlMs: 10, negativeTtlMs: 10, now: () => now });
    let admissions = 0;
    const admit = () => {
      admissions += 1;
    };
    const refuse = () => {
      throw new PreciseError('rate_limited', 'no');
    };
    await cache.get('real', admit);
    now = 100; // expired, but known: no admission
    await cache.get('real', refuse);
    await cache.get('gone', admit);
    await cache.get('gone', refuse); // a fresh miss: no admission
    now = 200; // an expired miss is unknown again
    await expect(cache.get('gone', refuse)).rejects.toThrow('no');
    expect(admissions).toBe(2);
    expect(loads).toEqual(['real', 'real', 'gone']);
  });

  it('evicts the least recently used known entry, and keeps nothing with a TTL of 0', async () => {
    const { loads, load } = loader(new Set(['a', 'b', 'c']));
    const cache = new TtlCache(load, { maxEntries: 2 });
    await cache.get('a');
    await cache.get('b');
    await cache.get('a'); // a is now the most recent
    await cache.get('c'); // evicts b
    await cache.get('a');
    await cache.get('b');
    expect(loads).toEqual(['a', 'b', 'c', 'b']);
    const uncached = new TtlCache(load, { ttlMs: 0, negativeTtlMs: 0 });
    await uncached.get('a');
    await uncached.get('a');
    await uncached.get('nope');
    await uncached.get('nope');
    expect(loads.slice(4)).toEqual(['a', 'a', 'nope', 'nope']);
  });

  it('shares the miss map with every cache over the same hit map (a Worker’s per-request caches)', async () => {
    const entries = new TtlCacheEntries<{ key: string }>();
    const first = loader(new Set());
    const second = loader(new Set());
    await new TtlCache(first.load, { entries }).get('fake');
    await new TtlCache(second.load, { entries }).get('fake');
    expect(first.loads).toEqual(['fake']);
    expect(second.loads).toEqual([]);
  });
});
