import { createMiddleware } from 'hono/factory';
import type { KeyResolver } from '../../core/auth.ts';
import { parseLimitsConfig } from '../../core/config.ts';
import { PreciseError } from '../../core/errors.ts';
import { addressKey, inProcessLimits, type RateLimiter, type RateLimits } from '../../core/rate-limit.ts';
import type { AppEnv } from '../env.ts';

/**
 * Rate limits of every request that presents a key: per client address, per key, and on the
 * database lookups of keys the cache does not know (per address and in total), so that a flood
 * of made-up keys neither evicts real ones nor reaches the database at its own pace.
 * The limits run where the key is resolved (this request's `services.keys`), so each route
 * answers a refusal in its own format: JSON 429, or the pixel's GIF with status 429; both with
 * `Retry-After` and the code `rate_limited`.
 */
export function rateLimits() {
  return createMiddleware<AppEnv>(async (c, next) => {
    const services = c.get('services');
    const ip = services.clientIp(c);
    // No address is known only under app.request() in tests: the per-address limits do not apply.
    const address = ip ? addressKey(ip) : undefined;
    c.set('services', { ...services, keys: limitedKeys(services.keys, services.limits ?? defaultLimits(), address) });
    await next();
  });
}

let defaults: RateLimits | undefined;
/** Services built without limits (test harnesses) get the documented defaults, process-wide. */
function defaultLimits(): RateLimits {
  return (defaults ??= inProcessLimits(parseLimitsConfig({})));
}

function limitedKeys(keys: KeyResolver, limits: RateLimits, address: string | undefined): KeyResolver {
  let addressCounted = false;
  const admitLookup = async () => {
    if (address) await enforce(limits.keyLookupsPerAddress, address, 'key_lookups_per_address', 'too many unknown keys from this address');
    await enforce(limits.keyLookups, '*', 'key_lookups', 'too many unknown keys are being tried');
  };
  return {
    async resolve(presented) {
      if (address && !addressCounted) {
        addressCounted = true;
        await enforce(limits.address, address, 'address', 'too many requests from this address');
      }
      const key = await keys.resolve(presented, admitLookup);
      if (key) await enforce(limits.key, key.id, 'key', 'too many requests with this key');
      return key;
    },
  };
}

async function enforce(limiter: RateLimiter, bucket: string, limit: string, message: string) {
  const decision = await limiter.take(bucket);
  if (!decision.ok) {
    throw new PreciseError('rate_limited', `${message}; retry after ${decision.retryAfterSeconds} s`, {
      limit,
      retry_after_seconds: decision.retryAfterSeconds,
    });
  }
}
