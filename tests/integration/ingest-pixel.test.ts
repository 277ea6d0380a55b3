import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BACKEND } from '../helpers/database.ts';
import { createIngestHarness, type IngestHarness } from '../helpers/ingest.ts';
import { ownEntities } from '../helpers/seed.ts';

const CHROME = 'Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36';
const IPHONE = 'Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1';
const GOOGLEBOT = 'Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)';

describe(`pixel and beacon (${BACKEND})`, () => {
  let h: IngestHarness;
  const campaignId = randomUUID();
  const assetA = randomUUID();
  const assetB = randomUUID();

  beforeAll(async () => {
    h = await createIngestHarness();
    await ownEntities(h.test.db, h.orgId, { campaigns: [campaignId], assets: [assetA, assetB] });
  });
  afterAll(() => h?.close());

  const pixel = (query: Record<string, string>, headers: Record<string, string> = {}) =>
    h.app.request(`/v1/px?${new URLSearchParams({ key: h.publishableKey, ...query })}`, {
      headers: { 'user-agent': CHROME, 'x-forwarded-for': '203.0.113.77', ...headers },
    });
  const eventById = async (id: string) => (await h.events()).find((event) => event.event_id === id);

  it('answers a 43-byte GIF that is never cached, once the event is stored', async () => {
    const response = await pixel({
      eid: 'px-1',
      ev: 'impression',
      cmp: campaignId,
      crv: 'crv-300x250',
      ast: `${assetA},${assetB}`,
      uid: 'device-42',
      ts: String(Date.now() - 60_000),
      v: '0.25',
      cur: 'USD',
      'p.placement': 'sidebar',
      cb: '12345',
    });
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toBe('image/gif');
    expect(response.headers.get('cache-control')).toContain('no-store');
    const body = new Uint8Array(await response.arrayBuffer());
    expect(body.length).toBe(43);
    expect(new TextDecoder().decode(body.slice(0, 6))).toBe('GIF89a');

    const stored = await eventById('px-1');
    expect(stored).toMatchObject({
      type: 'impression',
      campaign_id: campaignId,
      creative_id: 'crv-300x250',
      asset_ids: [assetA, assetB],
      user_key: 'device-42',
      value: '0.25',
      currency: 'USD',
      properties: { placement: 'sidebar' },
    });
    expect(Math.abs(stored!.occurred_at.getTime() - (Date.now() - 60_000))).toBeLessThan(5_000);
    expect(stored!.context).toMatchObject({
      source: 'pixel',
      bot: false,
      device: { type: 'desktop', browser: 'Chrome', os: 'macOS' },
      ip: { truncated: '203.0.113.0' },
      consent: { gpc: false, dnt: false, limited: false },
    });
    expect(stored!.context.ip.hash).toMatch(/^[0-9a-f]{32}$/);
  });

  it('never stores the raw IP, in any row', async () => {
    await pixel({ eid: 'px-ip-4' }, { 'x-forwarded-for': '2001:db8:85a3:8d3:1319:8a2e:370:7348' });
    await pixel({ v: 'abc' }, { 'x-forwarded-for': '198.51.100.23' });
    const stored = await eventById('px-ip-4');
    expect(stored!.context.ip.truncated).toBe('2001:db8:85a3::');
    const everything = await h.test.db.query<{ whole: string }>(
      `select row_to_json(e)::text as whole from events e
       union all select row_to_json(f)::text from failed_events f`,
    );
    const dump = everything.rows.map((row) => row.whole).join('\n');
    for (const raw of ['203.0.113.77', '2001:db8:85a3:8d3:1319:8a2e:370:7348', '198.51.100.23']) expect(dump).not.toContain(raw);
  });

  it('defaults the type to impression and gives an id-less event a UUIDv7', async () => {
    const before = (await h.events()).length;
    expect((await pixel({ crv: 'no-id' })).status).toBe(200);
    const added = (await h.events()).slice(before).find((event) => event.creative_id === 'no-id');
    expect(added!.type).toBe('impression');
    expect(added!.event_id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  });

  it('counts a retried event id once, even when the retry carries no timestamp', async () => {
    for (let i = 0; i < 3; i += 1) expect((await pixel({ eid: 'retry-me', ev: 'click' })).status).toBe(200);
    expect((await h.events()).filter((event) => event.event_id === 'retry-me')).toHaveLength(1);
  });

  it('flags a crawler, never drops it', async () => {
    await pixel({ eid: 'bot-1' }, { 'user-agent': GOOGLEBOT });
    await pixel({ eid: 'phone-1' }, { 'user-agent': IPHONE });
    expect((await eventById('bot-1'))!.context).toMatchObject({ bot: true, device: { type: 'bot' } });
    expect((await eventById('phone-1'))!.context).toMatchObject({ bot: false, device: { type: 'mobile', os: 'iOS' } });
  });

  it('honours Global Privacy Control, DNT and a consent parameter: no user key, no IP', async () => {
    await pixel({ eid: 'gpc-1', uid: 'u-1' }, { 'sec-gpc': '1' });
    await pixel({ eid: 'dnt-1', uid: 'u-2' }, { dnt: '1' });
    await pixel({ eid: 'denied-1', uid: 'u-3', consent: 'denied' });
    await pixel({ eid: 'granted-1', uid: 'u-4', consent: 'granted' });
    for (const id of ['gpc-1', 'dnt-1', 'denied-1']) {
      const stored = await eventById(id);
      expect({ id, user_key: stored!.user_key, ip: stored!.context.ip, limited: stored!.context.consent.limited }).toEqual({
        id,
        user_key: null,
        ip: undefined,
        limited: true,
      });
    }
    const granted = await eventById('granted-1');
    expect(granted).toMatchObject({ user_key: 'u-4', context: { consent: { param: 'granted', limited: false } } });
  });

  it('drops identifiers in anonymous mode (header or parameter)', async () => {
    await pixel({ eid: 'anon-1', uid: 'u-9' }, { 'x-precise-anonymous': '1' });
    await pixel({ eid: 'anon-2', uid: 'u-9', anon: '1' });
    for (const id of ['anon-1', 'anon-2']) {
      const stored = await eventById(id);
      expect(stored!.user_key).toBeNull();
      expect(stored!.context.anonymous).toBe(true);
      expect(stored!.context.ip).toBeUndefined();
      expect(stored!.context.device).toEqual({ type: 'desktop' });
    }
  });

  it('refuses bad input with the GIF, a 4xx and x-precise-error, and keeps it in failed_events', async () => {
    const response = await pixel({ eid: 'bad-1', v: 'lots', uid: 'u-bad' });
    expect(response.status).toBe(400);
    expect(response.headers.get('content-type')).toBe('image/gif');
    expect(response.headers.get('x-precise-error')).toBe('validation_failed');
    expect(decodeURIComponent(response.headers.get('x-precise-error-message')!)).toMatch(/value/);
    expect(await eventById('bad-1')).toBeUndefined();
    const failed = (await h.failedEvents()).find((row) => row.payload.includes('bad-1'));
    expect(failed).toMatchObject({ source: 'pixel', reason_code: 'invalid_field', field: 'value' });
    expect(failed!.payload).not.toContain(h.publishableKey);
    expect(failed!.properties.payload_format).toBe('query');

    const badCurrency = await pixel({ v: '1', cur: 'XYZ' });
    expect(badCurrency.headers.get('x-precise-error')).toBe('validation_failed');
    const badType = await pixel({ ev: 'Add To Cart' });
    expect(badType.status).toBe(400);
    const future = await pixel({ ts: String(Date.now() + 3 * 86_400_000) });
    expect(decodeURIComponent(future.headers.get('x-precise-error-message')!)).toMatch(/occurred_at/);
  });

  it('refuses missing, unknown and secret keys without storing anything', async () => {
    const before = (await h.failedEvents()).length;
    const missing = await h.app.request('/v1/px?ev=impression');
    expect([missing.status, missing.headers.get('x-precise-error')]).toEqual([401, 'unauthorized']);
    const unknown = await h.app.request(`/v1/px?key=pk_${'x'.repeat(32)}`);
    expect(unknown.status).toBe(401);
    expect(unknown.headers.get('content-type')).toBe('image/gif');
    const secret = await h.app.request(`/v1/px?key=${h.ingestKey}`);
    expect(secret.status).toBe(401);
    expect(decodeURIComponent(secret.headers.get('x-precise-error-message')!)).toMatch(/never be put in a URL/);
    expect((await h.failedEvents()).length).toBe(before);
  });

  it('takes a beacon: one event or an array, text/plain or JSON, 204', async () => {
    const single = await h.app.request(`/v1/px?key=${h.publishableKey}`, {
      method: 'POST',
      headers: { 'content-type': 'text/plain;charset=UTF-8', 'user-agent': CHROME },
      body: JSON.stringify({ event_id: 'beacon-1', type: 'creative_view', creative_id: 'crv-1' }),
    });
    expect(single.status).toBe(204);
    const many = await h.app.request(`/v1/px?key=${h.publishableKey}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify([{ event_id: 'beacon-2' }, { event_id: 'beacon-3', type: 'click', occurred_at: new Date().toISOString() }]),
    });
    expect(many.status).toBe(204);
    const stored = (await h.events()).filter((event) => event.event_id.startsWith('beacon-'));
    expect(stored.map((event) => [event.event_id, event.type, event.context.source])).toEqual([
      ['beacon-1', 'creative_view', 'beacon'],
      ['beacon-2', 'impression', 'beacon'],
      ['beacon-3', 'click', 'beacon'],
    ]);
  });

  it('stores the valid part of a mixed beacon and names what it refused', async () => {
    const response = await h.app.request(`/v1/px?key=${h.publishableKey}`, {
      method: 'POST',
      body: JSON.stringify([{ event_id: 'mixed-ok' }, { event_id: 'mixed-bad', value: 'NaN' }, { event_id: 'mixed-extra', colour: 'red' }]),
    });
    expect(response.status).toBe(400);
    const body = (await response.json()) as any;
    expect(body.error.code).toBe('validation_failed');
    expect(body.error.details.accepted).toBe(1);
    expect(body.error.details.rejected.map((r: any) => [r.index, r.code, r.field])).toEqual([
      [1, 'invalid_field', 'value'],
      [2, 'unknown_field', 'colour'],
    ]);
    expect(await eventById('mixed-ok')).toBeDefined();
    const failed = (await h.failedEvents()).filter((row) => row.payload.includes('mixed-'));
    expect(failed.map((row) => row.reason_code).sort()).toEqual(['invalid_field', 'unknown_field']);
  });

  it('refuses oversize beacons (413) and bodies that are not JSON (400)', async () => {
    const tooMany = await h.app.request(`/v1/px?key=${h.publishableKey}`, {
      method: 'POST',
      body: JSON.stringify(Array.from({ length: 101 }, (_, i) => ({ event_id: `many-${i}` }))),
    });
    expect(tooMany.status).toBe(413);
    const tooBig = await h.app.request(`/v1/px?key=${h.publishableKey}`, {
      method: 'POST',
      body: JSON.stringify({ type: 'impression', properties: { blob: 'x'.repeat(300 * 1024) } }),
    });
    expect(tooBig.status).toBe(413);
    expect(((await tooBig.json()) as any).error.code).toBe('payload_too_large');
    const notJson = await h.app.request(`/v1/px?key=${h.publishableKey}`, { method: 'POST', body: 'ev=impression' });
    expect(notJson.status).toBe(400);
    expect(((await notJson.json()) as any).error).toMatchObject({ code: 'bad_request', details: { field: 'body' } });
    expect((await h.events()).some((event) => event.event_id.startsWith('many-'))).toBe(false);
  });
});
