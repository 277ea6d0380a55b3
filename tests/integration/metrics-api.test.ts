import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApiKey, createOrganization } from '../../core/admin.ts';
import { runRollup } from '../../scheduled/jobs/rollup.ts';
import { BACKEND } from '../helpers/database.ts';
import { createIngestHarness, type IngestHarness } from '../helpers/ingest.ts';
import { ownEntities } from '../helpers/seed.ts';

// From the public endpoints to GET /v1/metrics, through the rollup: exact totals in any time zone.
describe(`GET /v1/metrics (${BACKEND})`, () => {
  let h: IngestHarness;
  let readKey: string;
  const campaignId = randomUUID();
  const sent: Array<{ type: string; at: number }> = [];

  beforeAll(async () => {
    h = await createIngestHarness();
    await ownEntities(h.test.db, h.orgId, { campaigns: [campaignId] });
    readKey = (await createApiKey(h.test.db, { orgId: h.orgId, kind: 'secret', scopes: ['read'] })).key;
    // every 11 minutes over 2026-03-07..09 UTC (New York springs forward on 2026-03-08): 1 click in 10
    const events: object[] = [];
    for (let t = Date.parse('2026-03-07T00:00:00Z'), i = 0; t < Date.parse('2026-03-10T00:00:00Z'); t += 11 * 60_000, i += 1) {
      const type = i % 10 === 0 ? 'click' : 'impression';
      events.push({ type, occurred_at: t, campaign_id: campaignId, creative_id: 'crv-1' });
      sent.push({ type, at: t });
    }
    for (let i = 0; i < events.length; i += 1000) {
      const response = await h.app.request('/v1/events', {
        method: 'POST',
        headers: { authorization: `Bearer ${h.ingestKey}` },
        body: JSON.stringify({ events: events.slice(i, i + 1000) }),
      });
      expect(response.status).toBe(202);
    }
    await h.services.sink.close?.();
    await runRollup(h.test.db);
  });
  afterAll(() => h?.close());

  const get = async (query: Record<string, string>, key = readKey) => {
    const response = await h.app.request(`/v1/metrics?${new URLSearchParams(query)}`, { headers: { authorization: `Bearer ${key}` } });
    return { status: response.status, body: (await response.json()) as any };
  };
  const expectedDays = (timeZone: string, type: string) => {
    const days = new Map<string, number>();
    for (const e of sent.filter((x) => x.type === type)) {
      const day = new Date(e.at).toLocaleDateString('en-CA', { timeZone });
      days.set(day, (days.get(day) ?? 0) + 1);
    }
    return days;
  };

  for (const timeZone of ['America/New_York', 'Asia/Kathmandu']) {
    it(`answers exact daily totals in ${timeZone}`, async () => {
      const { status, body } = await get({ metric: 'impressions', granularity: 'day', tz: timeZone, from: '2026-03-06', to: '2026-03-11' });
      expect(status).toBe(200);
      const got = Object.fromEntries(body.data.map((p: any) => [p.bucket.slice(0, 10), p.value]));
      const days = ['2026-03-06', '2026-03-07', '2026-03-08', '2026-03-09', '2026-03-10'];
      const expected = expectedDays(timeZone, 'impression');
      // every local day of the range, empty ones as 0
      expect(got).toEqual(Object.fromEntries(days.map((day) => [day, expected.get(day) ?? 0])));
    });
  }

  it('labels buckets with the local offset, across the change', async () => {
    const { body } = await get({ metric: 'impressions', granularity: 'day', tz: 'America/New_York', from: '2026-03-07', to: '2026-03-10' });
    expect(body.data.map((p: any) => p.bucket)).toEqual(['2026-03-07T00:00:00-05:00', '2026-03-08T00:00:00-05:00', '2026-03-09T00:00:00-04:00']);
    const kathmandu = await get({ metric: 'clicks', granularity: 'hour', tz: 'Asia/Kathmandu', from: '2026-03-08T00:00:00+05:45', to: '2026-03-08T03:00:00+05:45' });
    expect(kathmandu.body.data.map((p: any) => p.bucket)).toEqual(['2026-03-08T00:00:00+05:45', '2026-03-08T01:00:00+05:45', '2026-03-08T02:00:00+05:45']);
  });

  it('computes ratios from the summed counters, for a campaign, in several metrics at once', async () => {
    const { body } = await get({ metric: 'impressions,clicks', granularity: 'month', entity_type: 'campaign', entity_id: campaignId, from: '2026-03-01T00:00:00Z', to: '2026-04-01T00:00:00Z' });
    const month = Object.fromEntries(body.data.map((p: any) => [p.metric, p.value]));
    const impressions = sent.filter((e) => e.type === 'impression').length;
    const clicks = sent.filter((e) => e.type === 'click').length;
    expect(month).toEqual({ impressions, clicks });
    const ratio = await get({ metric: 'ctr', metric2: '', granularity: 'month', entity_type: 'campaign', entity_id: campaignId, from: '2026-03-01T00:00:00Z', to: '2026-04-01T00:00:00Z' });
    expect(ratio.body.data).toEqual([{ bucket: '2026-03-01T00:00:00+00:00', metric: 'ctr', value: clicks / impressions }]);
    const none = await get({ metric: 'cvr', granularity: 'month', from: '2026-03-01T00:00:00Z', to: '2026-04-01T00:00:00Z' });
    expect(none.body.data[0].value).toBe(0);
    const cpa = await get({ metric: 'cpa', granularity: 'month', from: '2026-03-01T00:00:00Z', to: '2026-04-01T00:00:00Z' });
    expect(cpa.body.data[0].value).toBeNull();
  });

  it('refuses what it cannot answer, naming the parameter', async () => {
    const cases: Array<[Record<string, string>, string]> = [
      [{ metric: 'impressions,views', from: '2026-03-07', to: '2026-03-08' }, 'metric'],
      [{ from: '2026-03-07', to: '2026-03-08' }, 'metric'],
      [{ metric: 'clicks', tz: 'Mars/Olympus_Mons', from: '2026-03-07', to: '2026-03-08' }, 'tz'],
      [{ metric: 'clicks', granularity: 'minute', from: '2026-03-07', to: '2026-03-08' }, 'granularity'],
      [{ metric: 'clicks', from: 'last tuesday', to: '2026-03-08' }, 'from'],
      [{ metric: 'clicks', from: '2026-03-08', to: '2026-03-07' }, 'to'],
      [{ metric: 'clicks', entity_type: 'campaign', from: '2026-03-07', to: '2026-03-08' }, 'entity_id'],
      [{ metric: 'clicks', granularity: 'hour', from: '2020-01-01', to: '2026-03-08' }, 'granularity'],
    ];
    for (const [query, field] of cases) {
      const { status, body } = await get(query);
      expect({ query, status, field: body.error.details.field }).toEqual({ query, status: 400, field });
    }
    expect((await get({ metric: 'clicks', from: '2026-03-07', to: '2026-03-08' }, h.ingestKey)).status).toBe(403);
    expect((await get({ metric: 'clicks', from: '2026-03-07', to: '2026-03-08' }, h.publishableKey)).status).toBe(403);
  });

  it('sums amounts per currency: one asked for, or a 400 when several would be added up', async () => {
    const spend = [
      { type: 'spend', occurred_at: '2026-03-20T10:00:00Z', value: 12.5, currency: 'USD', campaign_id: campaignId },
      { type: 'spend', occurred_at: '2026-03-20T11:00:00Z', value: 7.25, currency: 'USD', campaign_id: campaignId },
      { type: 'spend', occurred_at: '2026-03-20T12:00:00Z', value: 30, currency: 'EUR', campaign_id: campaignId },
      { type: 'impression', occurred_at: '2026-03-20T12:00:00Z', campaign_id: campaignId },
    ];
    const sentSpend = await h.app.request('/v1/events', {
      method: 'POST',
      headers: { authorization: `Bearer ${h.ingestKey}` },
      body: JSON.stringify({ events: spend }),
    });
    expect(sentSpend.status).toBe(202);
    await h.services.sink.close?.();
    await runRollup(h.test.db);
    const range = { granularity: 'day', tz: 'UTC', from: '2026-03-20', to: '2026-03-21' };
    const mixed = await get({ metric: 'spend', ...range });
    expect(mixed.status).toBe(400);
    expect(mixed.body.error).toMatchObject({ code: 'validation_failed', details: { field: 'currency' } });
    expect(mixed.body.error.message).toContain('EUR, USD');
    const usd = await get({ metric: 'spend,impressions', currency: 'USD', ...range });
    expect(usd.status).toBe(200);
    expect(usd.body.data).toEqual([
      { bucket: '2026-03-20T00:00:00+00:00', metric: 'spend', value: 19.75 },
      { bucket: '2026-03-20T00:00:00+00:00', metric: 'impressions', value: 1 },
    ]);
    // counters alone never need a currency
    expect((await get({ metric: 'impressions', ...range })).status).toBe(200);
  });

  it("shows an organization only its own metrics", async () => {
    const other = await createOrganization(h.test.db, { name: 'Other' });
    const otherKey = (await createApiKey(h.test.db, { orgId: other.id, kind: 'secret', scopes: ['read'] })).key;
    const { body } = await get({ metric: 'impressions', entity_type: 'campaign', entity_id: campaignId, granularity: 'month', from: '2026-03-01', to: '2026-04-01' }, otherKey);
    expect(body.data).toEqual([{ bucket: '2026-03-01T00:00:00+00:00', metric: 'impressions', value: 0 }]);
  });
});
