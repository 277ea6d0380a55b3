import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KeyCache, sqlKeyStore } from '../../core/auth.ts';
import { BACKEND } from '../helpers/database.ts';
import { createIngestHarness, type IngestHarness } from '../helpers/ingest.ts';

describe(`batch API POST /v1/events (${BACKEND})`, () => {
  let h: IngestHarness;
  beforeAll(async () => {
    h = await createIngestHarness();
  });
  afterAll(() => h?.close());

  const post = (body: unknown, key: string | null = h.ingestKey, headers: Record<string, string> = {}) =>
    h.app.request('/v1/events', {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(key ? { authorization: `Bearer ${key}` } : {}), ...headers },
      body: typeof body === 'string' ? body : JSON.stringify(body),
    });

  it('lands the valid events of a batch and reports each refused one by index', async () => {
    const campaign = randomUUID();
    const response = await post({
      events: [
        { event_id: 'b-1', type: 'impression', campaign_id: campaign, occurred_at: Date.now() - 1000 },
        { event_id: 'b-2', type: 'click', campaign_id: 'not-a-uuid' },
        { event_id: 'b-3', type: 'conversion', value: 49.9, currency: 'EUR', status: 'approved', click_id: 'clk-1' },
        { type: 'data_usage', asset_ids: [randomUUID()], properties: { rows: 1200 } },
        { event_id: 'b-5' },
        { event_id: 'b-6', type: 'click', value: 1, currency: 'euro' },
      ],
    });
    expect(response.status).toBe(202);
    const body = (await response.json()) as any;
    expect(body.accepted).toBe(3);
    expect(body.duplicates).toBe(0);
    expect(body.rejected).toEqual([
      { index: 1, code: 'invalid_field', message: 'campaign_id: must be a UUID', field: 'campaign_id' },
      { index: 4, code: 'missing_field', message: 'type is required', field: 'type' },
      { index: 5, code: 'invalid_field', message: 'currency: must be an ISO 4217 currency code, e.g. USD', field: 'currency' },
    ]);
    const stored = await h.events();
    expect(stored.map((event) => event.type).sort()).toEqual(['conversion', 'data_usage', 'impression']);
    expect(stored.find((event) => event.event_id === 'b-3')).toMatchObject({ value: '49.9', currency: 'EUR', status: 'approved', click_id: 'clk-1' });
    const failed = (await h.failedEvents()).map((row) => `${row.source}:${row.reason_code}:${row.field}`).sort();
    expect(failed).toEqual(['batch:invalid_field:campaign_id', 'batch:invalid_field:currency', 'batch:missing_field:type']);
  });

  it('counts a resent batch as duplicates, within a batch too', async () => {
    const events = [
      { event_id: 'd-1', type: 'impression' },
      { event_id: 'd-2', type: 'impression' },
    ];
    expect(((await (await post({ events })).json()) as any)).toMatchObject({ accepted: 2, duplicates: 0 });
    expect(((await (await post({ events })).json()) as any)).toMatchObject({ accepted: 0, duplicates: 2 });
    const repeated = await post({ events: [{ event_id: 'd-3', type: 'click' }, { event_id: 'd-3', type: 'click' }] });
    expect(await repeated.json()).toMatchObject({ accepted: 1, duplicates: 1 });
    expect((await h.events()).filter((event) => event.event_id.startsWith('d-'))).toHaveLength(3);
  });

  it('answers 400 when every event is refused, still keeping them', async () => {
    const before = (await h.failedEvents()).length;
    const response = await post({ events: [{ event_id: 'x', type: 'Bad' }] });
    expect(response.status).toBe(400);
    const body = (await response.json()) as any;
    expect(body.error).toMatchObject({ code: 'validation_failed', details: { accepted: 0, field: 'type' } });
    expect(body.error.request_id).toBeTruthy();
    expect((await h.failedEvents()).length).toBe(before + 1);
  });

  it('needs a secret key with the ingest scope, as a Bearer header', async () => {
    const events = { events: [{ type: 'impression' }] };
    const none = await post(events, null);
    expect(none.status).toBe(401);
    expect(((await none.json()) as any).error).toMatchObject({ code: 'unauthorized', details: { field: 'authorization' } });
    expect((await post(events, `sk_${'0'.repeat(32)}`)).status).toBe(401);
    expect((await post(events, 'not a key')).status).toBe(401);
    const publishable = await post(events, h.publishableKey);
    expect(publishable.status).toBe(403);
    const readOnly = await post(events, h.readOnlyKey);
    expect(readOnly.status).toBe(403);
    expect(((await readOnly.json()) as any).error.message).toMatch(/ingest scope/);
  });

  it('stops a revoked key within the cache lifetime, and at once for a new cache', async () => {
    const { rows } = await h.test.db.query<{ id: string }>(`select id from api_keys where org_id = $1 and 'ingest' = any(scopes)`, [h.orgId]);
    await h.test.db.query('update api_keys set revoked_at = now() where id = $1', [rows[0]!.id]);
    // the app's cache still knows the key for its TTL; a fresh cache asks the database
    expect(await h.services.keys.resolve(h.ingestKey)).not.toBeNull();
    expect(await new KeyCache(sqlKeyStore(h.test.db)).resolve(h.ingestKey)).toBeNull();
    const expiring = new KeyCache(sqlKeyStore(h.test.db), { ttlMs: 0, negativeTtlMs: 0 });
    expect(await expiring.resolve(h.ingestKey)).toBeNull();
    await h.test.db.query('update api_keys set revoked_at = null where id = $1', [rows[0]!.id]);
  });

  it('refuses envelopes that are not { events: [...] } and oversize batches', async () => {
    expect(((await (await post('{"events": ')).json()) as any).error).toMatchObject({ code: 'bad_request', details: { field: 'body' } });
    expect(((await (await post([{ type: 'impression' }])).json()) as any).error.details.field).toBe('events');
    expect((await post({ events: [] })).status).toBe(400);
    const tooMany = await post({ events: Array.from({ length: 1001 }, () => ({ type: 'impression' })) });
    expect(tooMany.status).toBe(413);
    const tooBig = await post({ events: [{ type: 'impression', properties: { blob: 'x'.repeat(1024 * 1024) } }] });
    expect(tooBig.status).toBe(413);
    expect(((await tooBig.json()) as any).error.code).toBe('payload_too_large');
  });

  it('bounds properties: size, keys and depth', async () => {
    const response = await post({
      events: [
        { type: 'impression', properties: { blob: 'x'.repeat(9000) } },
        { type: 'impression', properties: Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`k${i}`, i])) },
        { type: 'impression', properties: { a: { b: { c: { d: { e: 1 } } } } } },
        { type: 'impression', properties: { a: { b: { c: { d: 1 } } } } },
      ],
    });
    const body = (await response.json()) as any;
    expect(body.accepted).toBe(1);
    expect(body.rejected.map((r: any) => [r.index, r.field])).toEqual([
      [0, 'properties'],
      [1, 'properties'],
      [2, 'properties'],
    ]);
  });
});
