import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApiKey, createCampaign, createOrganization } from '../../core/admin.ts';
import { KeyCache, supabaseKeyStore } from '../../core/auth.ts';
import { supabaseServiceClient } from '../../core/db/supabase-client.ts';
import { supabaseMetricsReader } from '../../core/metrics-query.ts';
import { createApp } from '../../functions/app.ts';
import type { Services } from '../../functions/env.ts';
import { runRollup } from '../../scheduled/jobs/rollup.ts';
import { BACKEND } from '../helpers/database.ts';
import { createIngestHarness, type IngestHarness } from '../helpers/ingest.ts';
import { startPostgrestStandIn } from '../helpers/postgrest-standin.ts';

// From the public endpoints to GET /v1/metrics, through the rollup: exact totals in any time zone.
describe(`GET /v1/metrics (${BACKEND})`, () => {
  let h: IngestHarness;
  let readKey: string;
  let campaignId: string;
  const sent: Array<{ type: string; at: number }> = [];

  beforeAll(async () => {
    h = await createIngestHarness();
    campaignId = (await createCampaign(h.test.db, { orgId: h.orgId, name: 'Spring' })).id;
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
      { type: 'impression', occurred_at: '2026-03-20T12:00:00Z', campaign_id: campaignId, creative_id: 'crv-1' },
    ];
    const sentSpend = await h.app.request('/v1/events', {
      method: 'POST',
      headers: { authorization: `Bearer ${h.ingestKey}` },
      body: JSON.stringify({ events: spend }),
    });
    expect(sentSpend.status).toBe(202);
    sent.push({ type: 'impression', at: Date.parse('2026-03-20T12:00:00Z') });
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

  const send = async (events: object[]) => {
    const response = await h.app.request('/v1/events', {
      method: 'POST',
      headers: { authorization: `Bearer ${h.ingestKey}` },
      body: JSON.stringify({ events }),
    });
    expect(response.status).toBe(202);
    await h.services.sink.close?.();
    await runRollup(h.test.db);
  };
  const march = { metric: 'impressions', granularity: 'month', from: '2026-03-01', to: '2026-04-01' };
  const impressions = () => sent.filter((e) => e.type === 'impression').length;

  it('answers 404 for an entity of another organization, and reads its own ones in any case', async () => {
    const other = await createOrganization(h.test.db, { name: 'Other' });
    const otherKey = (await createApiKey(h.test.db, { orgId: other.id, kind: 'secret', scopes: ['read'] })).key;
    const otherCampaign = (await createCampaign(h.test.db, { orgId: other.id, name: 'Theirs' })).id;
    const cases: Array<[Record<string, string>, string]> = [
      [{ entity_type: 'campaign', entity_id: campaignId }, otherKey],
      [{ entity_type: 'campaign', entity_id: otherCampaign }, readKey],
      [{ entity_type: 'campaign', entity_id: randomUUID() }, readKey],
      [{ entity_type: 'organization', entity_id: other.id }, readKey],
      [{ entity_type: 'organization', entity_id: h.orgId }, otherKey],
      [{ entity_id: other.id }, readKey],
    ];
    for (const [query, key] of cases) {
      const { status, body } = await get({ ...march, ...query }, key);
      expect({ query, status, code: body.error?.code, field: body.error?.details.field }).toEqual({ query, status: 404, code: 'not_found', field: 'entity_id' });
    }
    for (const query of [{ entity_type: 'organization', entity_id: h.orgId.toUpperCase() }, { entity_type: 'campaign', entity_id: campaignId.toUpperCase() }, { entity_type: 'creative', entity_id: 'crv-1' }]) {
      const { status, body } = await get({ ...march, ...query });
      expect({ query, status, data: body.data }).toEqual({ query, status: 200, data: [{ bucket: '2026-03-01T00:00:00+00:00', metric: 'impressions', value: impressions() }] });
    }
    // a creative id is free text: another organization reads its own metrics of it, none
    const theirs = await get({ ...march, entity_type: 'creative', entity_id: 'crv-1' }, otherKey);
    expect(theirs.body.data).toEqual([{ bucket: '2026-03-01T00:00:00+00:00', metric: 'impressions', value: 0 }]);
  });

  it('reads a data asset it owns or was granted (one asset, or all of an owner), and no other', async () => {
    const owner = await createOrganization(h.test.db, { name: 'Data Owner' });
    const generous = await createOrganization(h.test.db, { name: 'Generous Owner' });
    const asset = async (orgId: string) =>
      (await h.test.db.query<{ id: string }>(`insert into data_assets (org_id, name, asset_type) values ($1, 'audience', 'audience') returning id`, [orgId])).rows[0]!.id;
    const assets = { own: await asset(h.orgId), granted: await asset(owner.id), foreign: await asset(owner.id), revoked: await asset(owner.id), blanket: await asset(generous.id) };
    const grant = (orgId: string, resourceId: string | null, revoked = false) =>
      h.test.db.query(
        `insert into permissions (org_id, grantee_type, grantee_id, resource_type, resource_id, action, revoked_at)
         values ($1, 'organization', $2, 'data_asset', $3, 'use', $4)`,
        [orgId, h.orgId, resourceId, revoked ? new Date() : null],
      );
    await grant(owner.id, assets.granted);
    await grant(owner.id, assets.revoked, true);
    await grant(generous.id, null);
    await send([{ type: 'impression', occurred_at: '2026-04-02T10:00:00Z', asset_ids: Object.values(assets) }]);
    const april = { metric: 'impressions', entity_type: 'data_asset', granularity: 'month', from: '2026-04-01', to: '2026-05-01' };
    for (const name of ['own', 'granted', 'blanket'] as const) {
      const { status, body } = await get({ ...april, entity_id: assets[name] });
      expect({ name, status, data: body.data }).toEqual({ name, status: 200, data: [{ bucket: '2026-04-01T00:00:00+00:00', metric: 'impressions', value: 1 }] });
    }
    // a revoked licence: its history stays readable, but a use after the revocation is not counted under it
    const revoked = await get({ ...april, entity_id: assets.revoked });
    expect(revoked.status).toBe(200);
    expect(revoked.body.data.map((point: { value: number | null }) => point.value ?? 0)).toEqual([0]);
    const foreign = await get({ ...april, entity_id: assets.foreign });
    expect(foreign.status).toBe(404);
    expect(foreign.body.error.details.field).toBe('entity_id');
  });

  it('refuses an unknown entity_type, and ids that cannot be one', async () => {
    for (const [query, field] of [
      [{ entity_type: 'foo', entity_id: campaignId }, 'entity_type'],
      [{ entity_type: '__proto__' }, 'entity_type'],
      [{ entity_type: 'campaign', entity_id: 'not-a-uuid' }, 'entity_id'],
      [{ entity_type: 'campaign', entity_id: '\u0000' }, 'entity_id'],
      [{ entity_id: '\u0000' }, 'entity_id'],
      [{ entity_type: 'creative', entity_id: 'crv\u0000' }, 'entity_id'],
      [{ entity_type: 'creative', entity_id: 'c'.repeat(129) }, 'entity_id'],
    ] as Array<[Record<string, string>, string]>) {
      const { status, body } = await get({ ...march, ...query });
      expect({ query, status, field: body.error?.details.field }).toEqual({ query, status: 400, field });
    }
  });

  it('takes IANA names only: offsets and names Postgres reads otherwise are refused', async () => {
    for (const tz of ['+05:30', '-08:00', '+0530', '+05', 'UTC+5', 'GMT+5', 'CET', 'EET', 'EST', 'EST5EDT', 'IST', 'Etc/Unknown', 'asia/kathmandu/x/y', '\u0000']) {
      const { status, body } = await get({ ...march, tz });
      expect({ tz, status, field: body.error?.details.field }).toEqual({ tz, status: 400, field: 'tz' });
    }
    // +05:30 meant as India: the same buckets as its name, labelled +05:30
    const india = await get({ metric: 'clicks', granularity: 'hour', tz: 'Asia/Kolkata', from: '2026-03-08T00:00:00+05:30', to: '2026-03-08T02:00:00+05:30' });
    expect(india.body.data.map((p: any) => p.bucket)).toEqual(['2026-03-08T00:00:00+05:30', '2026-03-08T01:00:00+05:30']);
    for (const tz of ['UTC', 'Etc/UTC', 'Etc/GMT+5', 'America/Argentina/Buenos_Aires', 'America/Port-au-Prince']) {
      expect({ tz, status: (await get({ ...march, tz })).status }).toEqual({ tz, status: 200 });
    }
    // a name the runtime knows and the database does not: the SQL function says so, no error
    const { rows } = await h.test.db.query<{ result: unknown }>(
      `select public.metric_buckets($1::uuid, 'organization', $1::text, '{impressions}', '2026-03-01', '2026-03-02', 'day', 'Nowhere/Never') as result`,
      [h.orgId],
    );
    expect(rows[0]!.result).toEqual({ refused: 'tz' });
  });

  it('answers 400 naming the field for prototype names, impossible dates and dates out of range', async () => {
    const cases: Array<[Record<string, string>, string]> = [
      ...['__proto__', 'constructor', 'toString', 'hasOwnProperty', 'impressions,valueOf'].map((metric): [Record<string, string>, string] => [{ ...march, metric }, 'metric']),
      ...['9999-99-99', '0001-01-01', '1999-12-31', '2101-01-01', '2026-02-30', '2026-13-01', '2026-03-07T24:00:00Z', '2026-03-07T10:00:00', '2026-03-07T10:00:00+24:00', '+275760-09-13T00:00:00Z', '2026-03-07T10:00:60Z'].map(
        (from): [Record<string, string>, string] => [{ ...march, from }, 'from'],
      ),
      [{ ...march, to: '9999-12-31' }, 'to'],
      [{ ...march, currency: 'eur' }, 'currency'],
    ];
    for (const [query, field] of cases) {
      const { status, body } = await get(query);
      expect({ query, status, field: body.error?.details.field }).toEqual({ query, status: 400, field });
    }
    // within the range and exact to the millisecond
    const precise = await get({ ...march, from: '2026-03-01T00:00:00.29+00:00', to: '2100-12-31T23:59:59.999999Z', granularity: 'month' });
    expect(precise.status).toBe(200);
    expect(precise.body.meta).toMatchObject({ from: '2026-03-01T00:00:00.290Z', to: '2100-12-31T23:59:59.999Z' });
  });

  it('counts amounts without a currency as their own currency, never added to EUR', async () => {
    await send([
      { type: 'spend', occurred_at: '2026-04-03T10:00:00Z', value: 5, campaign_id: campaignId },
      { type: 'spend', occurred_at: '2026-04-03T11:00:00Z', value: 30, currency: 'EUR', campaign_id: campaignId },
    ]);
    const day = { granularity: 'day', from: '2026-04-03', to: '2026-04-04' };
    for (const metric of ['spend', 'roas']) {
      const mixed = await get({ metric, ...day });
      expect(mixed.status).toBe(400);
      expect(mixed.body.error).toMatchObject({ code: 'validation_failed', details: { field: 'currency', currencies: ['EUR', 'none'] } });
    }
    expect((await get({ metric: 'spend', currency: 'EUR', ...day })).body.data).toEqual([{ bucket: '2026-04-03T00:00:00+00:00', metric: 'spend', value: 30 }]);
    expect((await get({ metric: 'spend', currency: 'none', ...day })).body.data).toEqual([{ bucket: '2026-04-03T00:00:00+00:00', metric: 'spend', value: 5 }]);
    // alone, amounts without a currency are summed as they are
    await send([{ type: 'spend', occurred_at: '2026-04-05T10:00:00Z', value: 2.5 }, { type: 'spend', occurred_at: '2026-04-05T12:00:00Z', value: 1 }]);
    expect((await get({ metric: 'spend', granularity: 'day', from: '2026-04-05', to: '2026-04-06' })).body.data).toEqual([{ bucket: '2026-04-05T00:00:00+00:00', metric: 'spend', value: 3.5 }]);
  });

  it('refuses the same through supabase-js rpc (PostgREST stand-in)', async () => {
    const serviceRoleKey = 'service-role-key-for-the-stand-in';
    const postgrest = await startPostgrestStandIn(h.test.db, serviceRoleKey);
    try {
      const client = supabaseServiceClient(postgrest.url, serviceRoleKey);
      const services: Services = { ...h.services, keys: new KeyCache(supabaseKeyStore(client)), metrics: supabaseMetricsReader(client) };
      const app = createApp({ services: () => services });
      const rpcGet = async (query: Record<string, string>) => {
        const response = await app.request(`/v1/metrics?${new URLSearchParams(query)}`, { headers: { authorization: `Bearer ${readKey}` } });
        return { status: response.status, body: (await response.json()) as any };
      };
      const other = await createOrganization(h.test.db, { name: 'Other over rpc' });
      const theirs = (await createCampaign(h.test.db, { orgId: other.id, name: 'Theirs' })).id;
      expect((await rpcGet({ ...march, entity_type: 'campaign', entity_id: theirs })).body.error).toMatchObject({ code: 'not_found', details: { field: 'entity_id' } });
      expect((await rpcGet({ ...march, entity_id: other.id })).status).toBe(404);
      const ours = await rpcGet({ ...march, entity_type: 'campaign', entity_id: campaignId });
      expect(ours.body.data).toEqual([{ bucket: '2026-03-01T00:00:00+00:00', metric: 'impressions', value: impressions() }]);
      const mixed = await rpcGet({ metric: 'spend', granularity: 'day', from: '2026-04-03', to: '2026-04-04' });
      expect(mixed.body.error).toMatchObject({ details: { field: 'currency', currencies: ['EUR', 'none'] } });
      expect(postgrest.calls).toContain('metric_buckets');
    } finally {
      await postgrest.close();
    }
  });
});
