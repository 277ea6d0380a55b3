import { env, exports } from 'cloudflare:workers';
import { describe, expect, it } from 'vitest';
import { generateKey } from '../../core/keys.ts';

// Browser-facing answers and the rate-limiting binding, in workerd (Miniflare simulates the
// `[[ratelimits]]` bindings of wrangler.toml with fixed windows aligned to the wall clock).
const request = (path: string, init: RequestInit = {}) => exports.default.fetch(`https://edge.test${path}`, init);

describe('the Worker to browsers and floods', () => {
  it('answers the beacon preflight for any origin and sends the security headers', async () => {
    const preflight = await request(`/v1/px?key=${env.TEST_PUBLISHABLE_KEY}`, {
      method: 'OPTIONS',
      headers: { origin: 'https://publisher.example', 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type' },
    });
    expect(preflight.status).toBe(204);
    expect(preflight.headers.get('access-control-allow-origin')).toBe('https://publisher.example');
    expect(preflight.headers.get('access-control-allow-credentials')).toBe('true');
    expect(preflight.headers.get('access-control-allow-headers')).toContain('content-type');

    const pixel = await request(`/v1/px?key=${env.TEST_PUBLISHABLE_KEY}&eid=wk-cors-1`, { headers: { origin: 'https://publisher.example' } });
    expect(pixel.status).toBe(200);
    expect(pixel.headers.get('x-content-type-options')).toBe('nosniff');
    expect(pixel.headers.get('referrer-policy')).toBe('no-referrer');
    expect(pixel.headers.get('content-security-policy')).toBe("default-src 'none'; frame-ancestors 'none'");
    expect(pixel.headers.get('cross-origin-resource-policy')).toBe('cross-origin');

    const api = await request('/v1/metrics', {
      method: 'OPTIONS',
      headers: { origin: 'https://publisher.example', 'access-control-request-method': 'GET' },
    });
    expect(api.headers.get('access-control-allow-origin')).toBeNull();
  });

  it('limits unknown-key lookups per address through the ratelimit binding (50 per 10 s)', async () => {
    // start early in a 10-second window, so that the run does not straddle two
    while (Date.now() % 10_000 > 4_000) await new Promise((resolve) => setTimeout(resolve, 200));
    const statuses: number[] = [];
    let refused: Response | undefined;
    for (let i = 0; i < 60; i += 1) {
      const response = await request(`/v1/px?key=${generateKey('publishable')}`, { headers: { 'cf-connecting-ip': '198.51.100.200' } });
      statuses.push(response.status);
      if (response.status === 429) refused ??= response;
      else await response.arrayBuffer();
    }
    // (401 each: unknown key; PGlite's one shared session behind the socket can make a rare lookup fail)
    expect(statuses.slice(0, 50).filter((s) => s === 429)).toEqual([]);
    expect(statuses.slice(50)).toEqual(Array(10).fill(429));
    expect(refused!.headers.get('x-precise-error')).toBe('rate_limited');
    expect(refused!.headers.get('retry-after')).toBe('10');
    // another address is not affected
    const other = await request(`/v1/px?key=${generateKey('publishable')}`, { headers: { 'cf-connecting-ip': '198.51.100.201' } });
    expect(other.status).toBe(401);
  });
});
