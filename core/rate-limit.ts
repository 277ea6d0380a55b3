import { PreciseError } from './errors.ts';
import { ipv6Groups, parseIp } from './ip.ts';

/**
 * Rate limits: "N requests per S seconds" per key (a client address, an API key). In process, a
 * token bucket per key (capacity N, refilled at N/S per second) in a bounded map, least recently
 * used out; at the edge, the Workers rate-limiting binding with the same shape.
 */
export interface RateDecision {
  ok: boolean;
  /** when a refused caller may try again (whole seconds, at least 1) */
  retryAfterSeconds: number;
}

export interface RateLimiter {
  take(key: string): RateDecision | Promise<RateDecision>;
}

/** "N/Ss" (N requests per S seconds), or "off". */
export interface RateSpec {
  limit: number;
  periodSeconds: number;
}

export const RATE_SPEC = /^(\d+)\/(\d+)s$/;

export function parseRateSpec(text: string): RateSpec | null {
  if (text === 'off') return null;
  const match = RATE_SPEC.exec(text);
  if (!match) throw new PreciseError('invalid_argument', `not a rate (N/Ss or off): ${text}`);
  const [limit, periodSeconds] = [Number(match[1]), Number(match[2])];
  if (limit < 1 || periodSeconds < 1) throw new PreciseError('invalid_argument', `a rate needs N ≥ 1 and S ≥ 1: ${text}`);
  return { limit, periodSeconds };
}

export const UNLIMITED: RateLimiter = { take: () => ({ ok: true, retryAfterSeconds: 0 }) };

export class TokenBucketLimiter implements RateLimiter {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();
  private readonly capacity: number;
  private readonly perMs: number;
  private readonly maxKeys: number;
  private readonly now: () => number;

  constructor(spec: RateSpec, options: { maxKeys?: number; now?: () => number } = {}) {
    this.capacity = spec.limit;
    this.perMs = spec.limit / (spec.periodSeconds * 1000);
    this.maxKeys = options.maxKeys ?? 100_000;
    this.now = options.now ?? Date.now;
  }

  take(key: string): RateDecision {
    const now = this.now();
    const bucket = this.buckets.get(key);
    let tokens = this.capacity;
    if (bucket) {
      this.buckets.delete(key); // re-inserted below: the map stays in least-recently-used order
      tokens = Math.min(this.capacity, bucket.tokens + (now - bucket.at) * this.perMs);
    } else if (this.buckets.size >= this.maxKeys) {
      // A full bucket is what a forgotten key gets back, so the oldest one costs the least.
      this.buckets.delete(this.buckets.keys().next().value!);
    }
    const ok = tokens >= 1;
    if (ok) tokens -= 1;
    this.buckets.set(key, { tokens, at: now });
    return { ok, retryAfterSeconds: ok ? 0 : Math.max(1, Math.ceil((1 - tokens) / this.perMs / 1000)) };
  }

  /** keys currently tracked (for tests and the bound) */
  get size(): number {
    return this.buckets.size;
  }
}

/** The Workers rate-limiting binding (`[[ratelimits]]` in wrangler.toml). */
export interface RateLimitBinding {
  limit(options: { key: string }): Promise<{ success: boolean }>;
}

/** The binding says only yes or no; a refused caller is told to come back after its period. */
export function bindingLimiter(binding: RateLimitBinding, periodSeconds = 10): RateLimiter {
  return {
    async take(key) {
      const { success } = await binding.limit({ key });
      return { ok: success, retryAfterSeconds: success ? 0 : periodSeconds };
    },
  };
}

export function limiterFor(spec: RateSpec | null, options?: { maxKeys?: number; now?: () => number }): RateLimiter {
  return spec ? new TokenBucketLimiter(spec, options) : UNLIMITED;
}

/**
 * The key of a client address in the limits: IPv4 as is, IPv6 by its /64 (one subscriber's
 * prefix: an attacker with a /64 must not get 2^64 buckets), IPv4-mapped IPv6 as IPv4.
 */
export function addressKey(ip: string): string {
  const address = parseIp(ip);
  if (!address) return ip.trim().toLowerCase();
  return 'octets' in address ? address.toString() : `${ipv6Groups(address, 4)}::/64`;
}

/** The limits a request passes (see functions/middleware/rate-limit.ts). */
export interface RateLimits {
  /** requests that present a key, per client address */
  address: RateLimiter;
  /** requests per API key (by key id) */
  key: RateLimiter;
  /** lookups of keys not in the cache, per client address */
  keyLookupsPerAddress: RateLimiter;
  /** lookups of keys not in the cache, all addresses together (one bucket) */
  keyLookups: RateLimiter;
}

/** Each limit's rate (null: off), by its variable's name (core/config.ts). */
export type RateLimitSpecs = Record<'RATE_LIMIT_ADDRESS' | 'RATE_LIMIT_KEY' | 'RATE_LIMIT_KEY_LOOKUPS_PER_ADDRESS' | 'RATE_LIMIT_KEY_LOOKUPS', RateSpec | null>;

export function inProcessLimits(
  specs: RateLimitSpecs,
  options?: { maxKeys?: number; now?: () => number },
): RateLimits {
  return {
    address: limiterFor(specs.RATE_LIMIT_ADDRESS, options),
    key: limiterFor(specs.RATE_LIMIT_KEY, options),
    keyLookupsPerAddress: limiterFor(specs.RATE_LIMIT_KEY_LOOKUPS_PER_ADDRESS, options),
    keyLookups: limiterFor(specs.RATE_LIMIT_KEY_LOOKUPS, options),
  };
}
