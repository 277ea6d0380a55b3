import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApiKey } from '../../core/admin.ts';
import { KeyCache, sqlKeyStore, type KeyStore } from '../../core/auth.ts';
import { generateKey } from '../../core/keys.ts';
import { inProcessLimits, parseRateSpec, type RateLimitSpecs } from '../../core/rate-limit.ts';
import { createApp, type App } from '../../functions/app.ts';
import type { Services } from '../../functions/env.ts';
import { BACKEND } from '../helpers/database.ts';
import { createIngestHarness, type IngestHarness } from '../helpers/ingest.ts';

// Abuse through the whole app (app.request()): floods of made-up keys, per-address and per-key
// limits, and what browsers are told (CORS, security headers). The real database throughout;
// its key lookups are counted.
type Limits = RateLimitSpecs;
const DEFAULT_SPECS: Limits = {
  RATE_LIMIT_ADDRESS: parseRateSpec('20000/1s'),
  RATE_LIMIT_KEY: parseRateSpec('20000/1s'),
  RATE_LIMIT_KEY_LOOKUPS_PER_ADDRESS: parseRateSpec('50/10s'),
  RATE_LIMIT_KEY_LOOKUPS: parseRateSpec('2000/10s'),
};

describe(`abuse limits through the app (${BACKEND})`, () => {
  let h: IngestHarness;
  let lookups = 0;
  let countedStore: KeyStore;

  beforeAll(async () => {
    h = await createIngestHarness();
    const real = sqlKeyStore(h.test.db);
    countedStore = { findByHash: (hash) => ((lookups += 1), real.findByHash(hash)) };
  });
  afterAll(() => h?.close());

  /** The harness's services with a fresh, counted key cache and the given limits. */
  function appWith(specs: Partial<Limits> = {}, extra: Partial<Services> = {}, cache = new KeyCache(countedStore)) {
    lookups = 0;
    const services: Services = { ...h.services, keys: cache, limits: inProcessLimits({ ...DEFAULT_SPECS, ...specs }), ...extra };
    return createApp({ services: () => services });
  }
  const pixelFrom = (app: App, key: string, ip: string) =>
    app.request(`/v1/px?key=${key}&ev=impression`, { headers: { 'x-forwarded-for': ip } });

  it('stops a flood of made-up keys from one address after its lookup budget: GIF 429 with Retry-After', async () => {
    const app = appWith({ RATE_LIMIT_KEY_LOOKUPS_PER_ADDRESS: parseRateSpec('20/60s') });
    expect((await pixelFrom(app, h.publishableKey, '203.0.113.50')).status).toBe(200); // a tenant's key, cached
    lookups = 0;
    const statuses: number[] = [];
    let refused: Response | undefined;
    for (let i = 0; i < 60; i += 1) {
      const response = await pixelFrom(app, generateKey('publishable'), '198.51.100.1');
      statuses.push(response.status);
      if (response.status === 429) refused ??= response;
    }
    expect(statuses.slice(0, 20).every((s) => s === 401)).toBe(true);
    expect(statuses.slice(20).every((s) => s === 429)).toBe(true);
    expect(lookups).toBe(20);
    expect(refused!.headers.get('content-type')).toBe('image/gif');
    expect(refused!.headers.get('x-precise-error')).toBe('rate_limited');
    expect(Number(refused!.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    expect(Number(refused!.headers.get('retry-after'))).toBeLessThanOrEqual(3);

    // another address still has its budget, and a known key from the flooding address still works
    expect((await pixelFrom(app, generateKey('publishable'), '198.51.100.2')).status).toBe(401);
    expect((await pixelFrom(app, h.publishableKey, '198.51.100.1')).status).toBe(200);
  });

  it('answers the JSON error shape with rate_limited on the batch API', async () => {
    const app = appWith({ RATE_LIMIT_KEY_LOOKUPS_PER_ADDRESS: parseRateSpec('2/60s') });
    const post = (key: string) =>
      app.request('/v1/events', {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', 'x-forwarded-for': '198.51.100.3', 'x-request-id': 'req-flood' },
        body: JSON.stringify({ events: [{ type: 'impression' }] }),
      });
    expect((await post(generateKey('secret'))).status).toBe(401);
    expect((await post(generateKey('secret'))).status).toBe(401);
    const refused = await post(generateKey('secret'));
    expect(refused.status).toBe(429);
    expect(Number(refused.headers.get('retry-after'))).toBe(30);
    expect(await refused.json()).toEqual({
      error: {
        code: 'rate_limited',
        message: 'too many unknown keys from this address; retry after 30 s',
        details: { limit: 'key_lookups_per_address', retry_after_seconds: 30 },
        request_id: 'req-flood',
      },
    });
    expect(lookups).toBe(2);
  });

  it('does not spend the budget on one unknown key repeated (its miss is cached)', async () => {
    const app = appWith({ RATE_LIMIT_KEY_LOOKUPS_PER_ADDRESS: parseRateSpec('2/60s') });
    const stale = generateKey('publishable');
    for (let i = 0; i < 30; i += 1) expect((await pixelFrom(app, stale, '198.51.100.4')).status).toBe(401);
    expect(lookups).toBe(1);
  });

  it('caps lookups of unknown keys over all addresses together', async () => {
    const app = appWith({ RATE_LIMIT_KEY_LOOKUPS: parseRateSpec('25/60s') });
    const statuses: number[] = [];
    for (let i = 0; i < 40; i += 1) statuses.push((await pixelFrom(app, generateKey('publishable'), `10.0.${i}.1`)).status);
    expect(statuses.filter((s) => s === 401)).toHaveLength(25);
    expect(statuses.filter((s) => s === 429)).toHaveLength(15);
    expect(lookups).toBe(25);
  });

  it('a flood from many addresses neither evicts a known key nor makes it cost a lookup', async () => {
    const app = appWith({}, {}, new KeyCache(countedStore, { maxEntries: 100, maxNegativeEntries: 100 }));
    expect((await pixelFrom(app, h.publishableKey, '203.0.113.9')).status).toBe(200);
    for (let i = 0; i < 500; i += 1) await pixelFrom(app, generateKey('publishable'), `172.16.${i >> 8}.${i & 255}`);
    expect(lookups).toBe(501);
    expect((await pixelFrom(app, h.publishableKey, '203.0.113.9')).status).toBe(200);
    expect(lookups).toBe(501);
  });

  it('re-checks a known key after its TTL without touching the unknown-key budget', async () => {
    let now = 1_000_000;
    const cache = new KeyCache(countedStore, { ttlMs: 1000, now: () => now });
    const app = appWith({ RATE_LIMIT_KEY_LOOKUPS_PER_ADDRESS: parseRateSpec('1/60s') }, {}, cache);
    expect((await pixelFrom(app, h.publishableKey, '198.51.100.5')).status).toBe(200);
    for (let i = 0; i < 3; i += 1) {
      now += 2000; // expired each time: a reload, not an unknown lookup
      expect((await pixelFrom(app, h.publishableKey, '198.51.100.5')).status).toBe(200);
    }
    expect(lookups).toBe(4);
    // ... while a never-seen key from the same address is refused: its one lookup is spent
    expect((await pixelFrom(app, generateKey('publishable'), '198.51.100.5')).status).toBe(429);
  });

  it('limits requests per key, and leaves other keys alone', async () => {
    const other = (await createApiKey(h.test.db, { orgId: h.orgId, kind: 'publishable' })).key;
    const app = appWith({ RATE_LIMIT_KEY: parseRateSpec('5/10s') });
    const statuses: number[] = [];
    for (let i = 0; i < 8; i += 1) statuses.push((await pixelFrom(app, h.publishableKey, `192.0.2.${i}`)).status);
    expect(statuses).toEqual([200, 200, 200, 200, 200, 429, 429, 429]);
    const refused = await pixelFrom(app, h.publishableKey, '192.0.2.99');
    expect(refused.headers.get('x-precise-error')).toBe('rate_limited');
    expect(Number(refused.headers.get('retry-after'))).toBe(2);
    expect((await pixelFrom(app, other, '192.0.2.1')).status).toBe(200);
  });

  it('limits requests per address (IPv6 by its /64), and leaves other addresses alone', async () => {
    const app = appWith({ RATE_LIMIT_ADDRESS: parseRateSpec('3/60s') });
    const statuses: number[] = [];
    for (const ip of ['2001:db8:1:2::1', '2001:db8:1:2::2', '2001:db8:1:2:ffff::3', '2001:0db8:0001:0002::4']) {
      statuses.push((await pixelFrom(app, h.publishableKey, ip)).status);
    }
    expect(statuses).toEqual([200, 200, 200, 429]);
    expect((await pixelFrom(app, h.publishableKey, '2001:db8:1:3::1')).status).toBe(200);
    const click = await app.request(`/v1/click?key=${h.publishableKey}&url=${encodeURIComponent('https://shop.example.com/')}`, {
      headers: { 'x-forwarded-for': '2001:db8:1:2::9' },
    });
    expect(click.status).toBe(429);
    expect((await click.json()) as object).toMatchObject({ error: { code: 'rate_limited', details: { limit: 'address' } } });
  });

  it('runs every existing test and benchmark unthrottled: the defaults allow thousands from one address', async () => {
    const app = createApp({ services: () => ({ ...h.services, limits: undefined }) });
    const responses = await Promise.all(
      Array.from({ length: 2000 }, (_, i) => app.request(`/v1/px?key=${h.publishableKey}&eid=bulk-${i}`, { headers: { 'x-forwarded-for': '127.0.0.1' } })),
    );
    expect(responses.filter((r) => r.status === 200)).toHaveLength(2000);
  });

  it('a burst of one new key costs one lookup and one unit of the lookup budget', async () => {
    const fresh = (await createApiKey(h.test.db, { orgId: h.orgId, kind: 'publishable' })).key;
    const app = appWith({ RATE_LIMIT_KEY_LOOKUPS_PER_ADDRESS: parseRateSpec('1/60s') });
    const responses = await Promise.all(Array.from({ length: 200 }, () => pixelFrom(app, fresh, '198.51.100.6')));
    expect(responses.map((r) => r.status).every((s) => s === 200)).toBe(true);
    expect(lookups).toBe(1);
  });
});

describe(`what browsers are told (${BACKEND})`, () => {
  let h: IngestHarness;
  beforeAll(async () => {
    h = await createIngestHarness();
  });
  afterAll(() => h?.close());

  const ORIGIN = 'https://publisher.example';

  it('answers the beacon preflight from any origin: 204, methods, content-type, credentials', async () => {
    for (const path of ['/v1/px', '/v1/click']) {
      const response = await h.app.request(`${path}?key=${h.publishableKey}`, {
        method: 'OPTIONS',
        headers: { origin: ORIGIN, 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type' },
      });
      expect(response.status).toBe(204);
      expect(response.headers.get('access-control-allow-origin')).toBe(ORIGIN);
      expect(response.headers.get('access-control-allow-credentials')).toBe('true');
      expect(response.headers.get('access-control-allow-methods')).toContain('POST');
      expect(response.headers.get('access-control-allow-headers')).toContain('content-type');
      expect(response.headers.get('vary')).toContain('Origin');
      expect(response.headers.get('x-content-type-options')).toBe('nosniff');
    }
  });

  it('lets a cross-origin JSON beacon through and marks its answer for that origin', async () => {
    const response = await h.app.request(`/v1/px?key=${h.publishableKey}`, {
      method: 'POST',
      headers: { origin: 'https://other.example', 'content-type': 'application/json' },
      body: JSON.stringify({ event_id: 'cors-beacon-1' }),
    });
    expect(response.status).toBe(204);
    expect(response.headers.get('access-control-allow-origin')).toBe('https://other.example');
    expect(response.headers.get('access-control-expose-headers')).toContain('x-precise-error');
    expect((await h.events()).some((e) => e.event_id === 'cors-beacon-1')).toBe(true);
  });

  it('gives the secret-key API to no origin by default, and to the configured ones only', async () => {
    const preflight = (app: App, origin: string) =>
      app.request('/v1/metrics', {
        method: 'OPTIONS',
        headers: { origin, 'access-control-request-method': 'GET', 'access-control-request-headers': 'authorization' },
      });
    const closed = await preflight(h.app, ORIGIN);
    expect(closed.headers.get('access-control-allow-origin')).toBeNull();
    const app = createApp({ services: () => ({ ...h.services, corsOrigins: ['https://dashboard.example'] }) });
    const allowed = await preflight(app, 'https://dashboard.example');
    expect(allowed.status).toBe(204);
    expect(allowed.headers.get('access-control-allow-origin')).toBe('https://dashboard.example');
    expect(allowed.headers.get('access-control-allow-headers')).toContain('authorization');
    expect(allowed.headers.get('access-control-allow-credentials')).toBeNull();
    expect((await preflight(app, ORIGIN)).headers.get('access-control-allow-origin')).toBeNull();
    const get = await app.request('/v1/metrics?metric=impressions&from=2026-03-06&to=2026-03-07', {
      headers: { origin: 'https://dashboard.example', authorization: `Bearer ${h.readOnlyKey}` },
    });
    expect(get.status).toBe(200);
    expect(get.headers.get('access-control-allow-origin')).toBe('https://dashboard.example');
  });

  it('sends nosniff, no-referrer and a CSP that allows nothing on every answer, errors included', async () => {
    const answers = await Promise.all([
      h.app.request(`/v1/px?key=${h.publishableKey}`),
      h.app.request('/v1/px?key=nope'),
      h.app.request('/v1/nope'),
      h.app.request('/healthz'),
      h.app.request('/v1/events', { method: 'POST', headers: { authorization: `Bearer ${h.ingestKey}` }, body: '{' }),
      h.app.request(`/v1/click?key=${h.publishableKey}&url=javascript:alert(1)`),
    ]);
    expect(answers.map((r) => r.status)).toEqual([200, 401, 404, 200, 400, 400]);
    for (const response of answers) {
      expect(response.headers.get('x-content-type-options')).toBe('nosniff');
      expect(response.headers.get('referrer-policy')).toBe('no-referrer');
      expect(response.headers.get('content-security-policy')).toBe("default-src 'none'; frame-ancestors 'none'");
      expect(response.headers.get('x-frame-options')).toBe('DENY');
    }
    // an <img> pixel on another site must still load; the API stays same-origin
    expect(answers[0]!.headers.get('cross-origin-resource-policy')).toBe('cross-origin');
    expect(answers[2]!.headers.get('cross-origin-resource-policy')).toBe('same-origin');
  });
});
