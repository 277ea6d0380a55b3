import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApiKey, createCampaign, createOrganization } from '../../core/admin.ts';
import { supabaseAttributionReader } from '../../core/attribution-query.ts';
import { KeyCache, supabaseKeyStore } from '../../core/auth.ts';
import { supabaseServiceClient } from '../../core/db/supabase-client.ts';
import { createApp } from '../../functions/app.ts';
import type { Services } from '../../functions/env.ts';
import { runAttribution } from '../../scheduled/jobs/attribution.ts';
import { asUser, attempt, BACKEND } from '../helpers/database.ts';
import { createIngestHarness, type IngestHarness } from '../helpers/ingest.ts';
import { startPostgrestStandIn } from '../helpers/postgrest-standin.ts';
import { createAuthUser } from '../helpers/seed.ts';

const CHROME = 'Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36';
const HOUR = 3_600_000;
const DAY = 24 * HOUR;

// The README's worked example, end to end: touches through the pixel and click redirect,
// conversions through the batch API and a postback, the attribution job, then the API.
//   ann: click A (3 days before her purchase), a view of B 2 days before (outside the 1-day view
//        window), a view of B 12 h before, a click on B 4 h before; purchase of 100 EUR.
//   bob: a click on B without a user key, converted by the network's postback (50 EUR) naming it.
//   cat: a view of A, no conversion (a non-converting path for Markov).
describe(`attribution (${BACKEND})`, () => {
  let h: IngestHarness;
  let readKey: string;
  let postbackToken: string;
  let campaignA: string;
  let campaignB: string;
  let bobClick: string;
  // ann converts at T, a whole hour a day ago; the period holds every conversion of the test
  const T = Math.floor(Date.now() / HOUR) * HOUR - DAY;
  const period = { from: new Date(T - 10 * DAY).toISOString(), to: new Date(Math.ceil(Date.now() / HOUR) * HOUR + 2 * HOUR).toISOString() };

  const flush = () => h.services.sink.close?.();
  const pixel = async (query: Record<string, string | number>) => {
    const response = await h.app.request(`/v1/px?${new URLSearchParams({ key: h.publishableKey, ...Object.fromEntries(Object.entries(query).map(([k, v]) => [k, String(v)])) })}`, {
      headers: { 'user-agent': CHROME },
    });
    expect(response.status).toBe(200);
  };
  const click = async (query: Record<string, string | number>) => {
    const params = new URLSearchParams({ key: h.publishableKey, url: 'https://shop.example.com/', ...Object.fromEntries(Object.entries(query).map(([k, v]) => [k, String(v)])) });
    const response = await h.app.request(`/v1/click?${params}`, { headers: { 'user-agent': CHROME } });
    expect(response.status).toBe(302);
    return new URL(response.headers.get('location')!).searchParams.get('pclid')!;
  };
  const batch = async (events: object[], key = h.ingestKey) => {
    const response = await h.app.request('/v1/events', { method: 'POST', headers: { authorization: `Bearer ${key}` }, body: JSON.stringify({ events }) });
    expect(response.status).toBe(202);
  };
  const postback = async (query: string) => {
    const response = await h.app.request(`/v1/postback/${postbackToken}?${query}`);
    expect(response.status).toBe(200);
  };
  const job = async () => {
    await flush();
    return (await runAttribution(h.test.db)) as Record<string, any>;
  };
  const get = async (path: string, query: Record<string, string>, key = readKey, app = h.app) => {
    const response = await app.request(`${path}?${new URLSearchParams(query)}`, { headers: { authorization: `Bearer ${key}` } });
    return { status: response.status, body: (await response.json()) as any };
  };
  const attribution = (query: Record<string, string>, key?: string) => get('/v1/attribution', { ...period, ...query }, key);
  /** {model: {key: [conversions, value]}} of one currency, rounded */
  const table = (data: any[], currency: string | null = 'EUR') => {
    const out: Record<string, Record<string, [number, number]>> = {};
    for (const row of data.filter((r) => r.currency === currency)) {
      (out[row.model] ??= {})[row.key] = [round(row.conversions), round(row.value)];
    }
    return out;
  };
  const round = (x: number) => Math.round(x * 1e6) / 1e6;
  const points = async () =>
    (
      await h.test.db.query<{ row: string }>(
        `select concat_ws(' ', entity_type, entity_id, metric, dimensions::text, bucket_start::text, value::text) as row
         from metrics where org_id = $1 and metric like 'attributed_%' order by 1`,
        [h.orgId],
      )
    ).rows.map((r) => r.row);

  beforeAll(async () => {
    h = await createIngestHarness();
    readKey = (await createApiKey(h.test.db, { orgId: h.orgId, kind: 'secret', scopes: ['read'] })).key;
    postbackToken = (await createApiKey(h.test.db, { orgId: h.orgId, kind: 'postback' })).key;
    const allow = { click_allow_list: ['shop.example.com'] };
    campaignA = (await createCampaign(h.test.db, { orgId: h.orgId, name: 'Search', properties: allow })).id;
    campaignB = (await createCampaign(h.test.db, { orgId: h.orgId, name: 'Display', properties: allow })).id;

    await click({ cmp: campaignA, crv: 'crv-a1', uid: 'ann', ts: T - 3 * DAY, 'p.channel': 'search' });
    await pixel({ cmp: campaignB, crv: 'crv-b1', uid: 'ann', ts: T - 2 * DAY, 'p.channel': 'display' });
    await pixel({ cmp: campaignB, crv: 'crv-b1', uid: 'ann', ts: T - 12 * HOUR, 'p.channel': 'display' });
    await click({ cmp: campaignB, crv: 'crv-b2', uid: 'ann', ts: T - 4 * HOUR, 'p.channel': 'display' });
    await batch([{ event_id: 'order-ann', type: 'purchase', user_key: 'ann', value: 100, currency: 'EUR', occurred_at: T }]);
    bobClick = await click({ cmp: campaignB, crv: 'crv-b2', ts: Date.now() - HOUR, 'p.channel': 'display' });
    await flush();
    await postback(`clickid=${bobClick}&event=purchase&payout=50&currency=EUR&tid=bob-1`);
    await pixel({ cmp: campaignA, crv: 'crv-a1', uid: 'cat', ts: T - DAY, 'p.channel': 'search' });
    await job();
  });
  afterAll(() => h?.close());

  const ALL = 'last_touch,first_touch,linear,position_based,time_decay,markov,shapley';
  // time decay, half-life 7 days: ages 3 d, 12 h, 4 h
  const decay = [2 ** (-3 / 7), 2 ** (-0.5 / 7), 2 ** (-(4 / 24) / 7)];
  const decayA = decay[0]! / (decay[0]! + decay[1]! + decay[2]!);

  it('credits the worked example by every model (the README numbers)', async () => {
    const { status, body } = await attribution({ model: ALL, dimension: 'campaign' });
    expect(status).toBe(200);
    const [A, B] = [campaignA, campaignB];
    expect(table(body.data)).toEqual({
      last_touch: { [B]: [2, 150] },
      first_touch: { [A]: [1, 100], [B]: [1, 50] },
      linear: { [A]: [round(1 / 3), round(100 / 3)], [B]: [round(5 / 3), round(200 / 3 + 50)] },
      position_based: { [A]: [0.4, 40], [B]: [1.6, 110] },
      time_decay: { [A]: [round(decayA), round(100 * decayA)], [B]: [round(2 - decayA), round(150 - 100 * decayA)] },
      // removal effects A 0.5, B 1 (P(conv) 2/3 from START; 1/3 without A; 0 without B)
      markov: { [A]: [round(2 / 3), 50], [B]: [round(4 / 3), 100] },
      shapley: { [A]: [0.5, 50], [B]: [1.5, 100] },
    });
    expect(body.meta).toMatchObject({
      conversions: 2,
      attributed: 2,
      unattributed: 0,
      pending: 0,
      paths: { converting: 2, non_converting: 1 },
      windows: { click_window_days: 7, view_window_days: 1, click_beats_view: false, time_decay_half_life_days: 7 },
    });
  });

  it('explains one conversion: its path, the channel of each touch, each rule model per touch', async () => {
    const { status, body } = await get('/v1/attribution/conversions/order-ann', {});
    expect(status).toBe(200);
    expect(body.data).toMatchObject({ event_id: 'order-ann', status: 'approved', value: 100, currency: 'EUR', user_key: 'ann', attributed: true });
    const touches = body.data.touches;
    expect(touches.map((t: any) => [t.kind, t.channels.campaign, t.channels.creative, t.channels.properties.channel, Date.parse(t.at) - T])).toEqual([
      ['click', campaignA, 'crv-a1', 'search', -3 * DAY],
      ['view', campaignB, 'crv-b1', 'display', -12 * HOUR],
      ['click', campaignB, 'crv-b2', 'display', -4 * HOUR],
    ]);
    expect(touches.map((t: any) => t.credits.position_based)).toEqual([0.4, 0.2, 0.4]);
    expect(touches.map((t: any) => t.credits.last_touch)).toEqual([0, 0, 1]);
    expect(touches[0].credits.time_decay).toBeCloseTo(decayA, 12);
    // bob's conversion, by the postback's event id too: the click it names, without a user key
    const bob = (await h.events()).find((e) => e.type === 'purchase' && e.click_id === bobClick)!;
    const explained = await get(`/v1/attribution/conversions/${encodeURIComponent(bob.event_id)}`, {});
    expect(explained.body.data.touches.map((t: any) => [t.kind, t.channels.campaign])).toEqual([['click', campaignB]]);
  });

  it('splits by creative and data asset, and by a touch property, computed from the paths', async () => {
    const creative = await attribution({ model: 'last_touch,linear', dimension: 'creative' });
    expect(table(creative.body.data)).toEqual({
      last_touch: { 'crv-b2': [2, 150] },
      linear: { 'crv-a1': [round(1 / 3), round(100 / 3)], 'crv-b1': [round(1 / 3), round(100 / 3)], 'crv-b2': [round(4 / 3), round(100 / 3 + 50)] },
    });
    // property:channel (computed now from the stored paths) agrees with the campaigns (stored metrics)
    const byProperty = await attribution({ model: ALL, dimension: 'property:channel' });
    const byCampaign = await attribution({ model: ALL, dimension: 'campaign' });
    const names: Record<string, string> = { search: campaignA, display: campaignB };
    expect(table(byProperty.body.data.map((row: any) => ({ ...row, key: names[row.key] })))).toEqual(table(byCampaign.body.data));
    // no touch has a data asset
    const assets = await attribution({ model: 'linear', dimension: 'data_asset' });
    expect(table(assets.body.data)).toEqual({ linear: { '(none)': [2, 150] } });
  });

  it('filters by campaign: its conversions and the paths touching it, credit still split over the whole path', async () => {
    const { body } = await attribution({ model: 'linear,shapley', dimension: 'campaign', campaign_id: campaignA });
    expect(table(body.data)).toEqual({
      linear: { [campaignA]: [round(1 / 3), round(100 / 3)], [campaignB]: [round(2 / 3), round(200 / 3)] },
      shapley: { [campaignA]: [0.5, 50], [campaignB]: [0.5, 50] },
    });
    expect(body.meta).toMatchObject({ conversions: 1, attributed: 1, paths: { converting: 1, non_converting: 1 }, campaign_id: campaignA });
  });

  it('gives bootstrap intervals to markov and shapley on request', async () => {
    const { body } = await attribution({ model: 'linear,markov,shapley', interval: '0.9' });
    expect(body.meta.interval).toBe(0.9);
    for (const row of body.data) {
      if (row.model === 'linear') expect(row.low).toBeUndefined();
      else {
        expect(row.low.conversions).toBeLessThanOrEqual(row.high.conversions);
        expect(row.low.value).toBeLessThanOrEqual(row.high.value);
      }
    }
  });

  it('stores the rule models as 15-minute metrics: any day is a sum of stored points', async () => {
    const { rows } = await h.test.db.query<{ model: string; total: string; buckets: number }>(
      `select dimensions ->> 'model' as model, trim_scale(sum(value))::text as total, count(distinct bucket_start)::int as buckets
       from metrics where org_id = $1 and metric = 'attributed_conversions' and entity_type = 'campaign' and granularity = '15m'
       group by 1 order by 1`,
      [h.orgId],
    );
    // exactly: each conversion's credits are whole 10^-12 units summing to one
    expect(rows.map((r) => [r.model, r.total])).toEqual(
      ['first_touch', 'last_touch', 'linear', 'position_based', 'time_decay'].map((model) => [model, '2']),
    );
    expect(rows.every((r) => r.buckets === 2)).toBe(true);
  });

  it('counts a conversion without a touch in its windows as unattributed, until a late touch reopens it alone', async () => {
    await batch([{ event_id: 'order-dan', type: 'purchase', user_key: 'dan', value: 20, currency: 'USD', occurred_at: T - 5 * HOUR }]);
    const first = await job();
    expect(first).toMatchObject({ conversions: 1, paths_built: 1 });
    const before = await attribution({ model: 'last_touch' });
    expect(before.body.meta).toMatchObject({ conversions: 3, attributed: 2, unattributed: 1 });
    expect(before.body.data.filter((row: any) => row.currency === 'USD')).toEqual([]);

    // a view of A 6 h before dan's purchase, arriving late: only dan's path is built again
    await pixel({ cmp: campaignA, crv: 'crv-a1', uid: 'dan', ts: T - 6 * HOUR });
    const late = await job();
    expect(late).toMatchObject({ touches: 1, reopened: 1, paths_built: 1, paths_changed: 1, conversions_credited: 1 });
    const after = await attribution({ model: 'last_touch,markov' });
    expect(after.body.meta).toMatchObject({ conversions: 3, attributed: 3, unattributed: 0 });
    // amounts per currency, never added across currencies
    expect(table(after.body.data, 'USD')).toEqual({ last_touch: { [campaignA]: [1, 20] }, markov: expect.any(Object) });
    expect(table(after.body.data, 'EUR').last_touch).toEqual({ [campaignB]: [2, 150] });
    // a touch after the conversion, or outside every window, reopens nothing
    await pixel({ cmp: campaignB, uid: 'dan', ts: T - 4 * HOUR + 1 });
    await pixel({ cmp: campaignB, uid: 'ann', ts: T + HOUR });
    expect(await job()).toMatchObject({ touches: 2, reopened: 0, paths_built: 0 });
  });

  it('withdraws the credit of a rejected conversion and restores it when approved', async () => {
    await postback(`clickid=${bobClick}&event=purchase&payout=50&currency=EUR&tid=bob-1&status=rejected`);
    await job();
    const rejected = await attribution({ model: 'last_touch,shapley', dimension: 'campaign' });
    expect(table(rejected.body.data)).toEqual({ last_touch: { [campaignB]: [1, 100] }, shapley: { [campaignA]: [0.5, 50], [campaignB]: [0.5, 50] } });
    const bob = (await h.events()).find((e) => e.type === 'purchase' && e.click_id === bobClick)!;
    expect((await get(`/v1/attribution/conversions/${encodeURIComponent(bob.event_id)}`, {})).body.data).toMatchObject({ status: 'rejected', attributed: false });

    // eve: pending first (no credit), then approved (credit)
    const eveClick = await click({ cmp: campaignA, crv: 'crv-a2', uid: 'eve', ts: Date.now() - 2 * HOUR });
    await flush();
    await postback(`clickid=${eveClick}&event=purchase&payout=10&currency=EUR&tid=eve-1&status=pending`);
    await job();
    expect(table((await attribution({ model: 'last_touch' })).body.data).last_touch).toEqual({ [campaignB]: [1, 100] });
    await postback(`clickid=${eveClick}&event=purchase&payout=10&currency=EUR&tid=eve-1&status=approved`);
    await job();
    expect(table((await attribution({ model: 'last_touch' })).body.data).last_touch).toEqual({ [campaignA]: [1, 10], [campaignB]: [1, 100] });
  });

  it('changes nothing on a rerun, and a range rebuild writes the same points as the steps', async () => {
    const before = await points();
    expect(before.length).toBeGreaterThan(20);
    expect(await job()).toMatchObject({ touches: 0, conversions: 0, paths_built: 0, conversions_credited: 0, points: 0 });
    expect(await points()).toEqual(before);
    const progress: number[] = [];
    const rebuilt = (await runAttribution(h.test.db, { from: period.from, to: period.to }, ({ done }) => progress.push(done))) as any;
    expect(rebuilt.days).toBe(progress.length);
    expect(rebuilt.paths).toBe(4);
    expect(await points()).toEqual(before);
  });

  it('applies new settings to past conversions with a range rebuild: click_beats_view', async () => {
    await h.test.db.query(`update organizations set properties = properties || '{"attribution": {"click_beats_view": true}}' where id = $1`, [h.orgId]);
    await runAttribution(h.test.db, period);
    const explained = await get('/v1/attribution/conversions/order-ann', {});
    expect(explained.body.data.touches.map((t: any) => t.kind)).toEqual(['click', 'click']);
    const { body } = await attribution({ model: 'linear' });
    expect(table(body.data).linear).toEqual({ [campaignA]: [round(0.5 + 1), 50 + 10], [campaignB]: [0.5, 50] });
    expect(body.meta.windows.click_beats_view).toBe(true);
    // and back
    await h.test.db.query(`update organizations set properties = properties - 'attribution' where id = $1`, [h.orgId]);
    await runAttribution(h.test.db, period);
    expect((await get('/v1/attribution/conversions/order-ann', {})).body.data.touches).toHaveLength(3);
  });

  it('refuses bad settings as they are written, and a stored bad setting holds back only its organization', async () => {
    const refused = await h.test.db
      .query(`update organizations set properties = '{"attribution": {"click_window_days": 365}}' where id = $1`, [h.orgId])
      .then(() => undefined, (error: Error & { code?: string }) => error);
    expect(refused?.code).toBe('23514');
    expect(refused?.message).toContain('properties.attribution.click_window_days must be an integer from 1 to 90 (got 365)');

    const other = await createOrganization(h.test.db, { name: 'Misconfigured' });
    const otherIngest = (await createApiKey(h.test.db, { orgId: other.id, kind: 'secret', scopes: ['ingest'] })).key;
    // as if written before the check existed
    await h.test.db.transaction(async (tx) => {
      await tx.query('set local session_replication_role = replica');
      await tx.query(`update organizations set properties = '{"attribution": {"view_window": 2}}' where id = $1`, [other.id]);
    });
    await batch([{ event_id: 'order-other', type: 'purchase', user_key: 'zed', occurred_at: T }], otherIngest);
    await batch([{ event_id: 'order-fay', type: 'purchase', user_key: 'fay', occurred_at: T }]);
    const result = await job();
    expect(result.conversions).toBe(2);
    expect(result.paths_built).toBe(1);
    expect(result.settings_errors).toEqual([
      { org_id: other.id, field: 'properties.attribution.view_window', waiting: 1, error: expect.stringContaining('view_window is not a setting') },
    ]);
    await h.test.db.query(`update organizations set properties = '{"attribution": {"view_window_days": 2}}' where id = $1`, [other.id]);
    const fixed = await job();
    expect(fixed).toMatchObject({ paths_built: 1 });
    expect(fixed.settings_errors).toBeUndefined();
  });

  it('answers 400 naming the parameter, and 404 for what is another organization’s', async () => {
    const cases: Array<[Record<string, string>, string]> = [
      [{ dimension: 'campaign' }, 'model'],
      [{ model: 'last_click' }, 'model'],
      [{ model: 'linear,__proto__' }, 'model'],
      [{ model: 'linear', dimension: 'country' }, 'dimension'],
      [{ model: 'linear', dimension: 'property:' }, 'dimension'],
      [{ model: 'linear', dimension: `property:${'x'.repeat(65)}` }, 'dimension'],
      [{ model: 'linear', dimension: 'property:a\u0000b' }, 'dimension'],
      [{ model: 'linear', tz: '+05:30' }, 'tz'],
      [{ model: 'linear', from: 'yesterday' }, 'from'],
      [{ model: 'linear', to: '2026-02-30' }, 'to'],
      [{ model: 'linear', from: period.to, to: period.from }, 'to'],
      [{ model: 'linear', campaign_id: 'not-a-uuid' }, 'campaign_id'],
      [{ model: 'markov', interval: '1' }, 'interval'],
      [{ model: 'markov', interval: 'wide' }, 'interval'],
      [{ model: 'markov', interval: '0' }, 'interval'],
    ];
    for (const [query, field] of cases) {
      const { status, body } = await attribution(query);
      expect({ query, status, field: body.error?.details.field }).toEqual({ query, status: 400, field });
    }
    const badId = await get(`/v1/attribution/conversions/${encodeURIComponent('two words')}`, {});
    expect([badId.status, badId.body.error.details.field]).toEqual([400, 'event_id']);

    const other = await createOrganization(h.test.db, { name: 'Other' });
    const otherKey = (await createApiKey(h.test.db, { orgId: other.id, kind: 'secret', scopes: ['read'] })).key;
    const theirs = await get('/v1/attribution/conversions/order-ann', {}, otherKey);
    expect([theirs.status, theirs.body.error.code, theirs.body.error.details.field]).toEqual([404, 'not_found', 'event_id']);
    expect((await get('/v1/attribution/conversions/no-such-order', {})).status).toBe(404);
    const theirCampaign = (await createCampaign(h.test.db, { orgId: other.id, name: 'Theirs' })).id;
    const filtered = await attribution({ model: 'linear', campaign_id: theirCampaign });
    expect([filtered.status, filtered.body.error.details.field]).toEqual([404, 'campaign_id']);
    // another organization sees none of this one's conversions
    expect((await attribution({ model: ALL }, otherKey)).body).toMatchObject({ data: [], meta: { conversions: 0 } });
    expect((await attribution({ model: 'linear' }, h.ingestKey)).status).toBe(403);
  });

  it('reads the same through supabase-js rpc (PostgREST stand-in)', async () => {
    const serviceRoleKey = 'service-role-key-for-the-stand-in';
    const postgrest = await startPostgrestStandIn(h.test.db, serviceRoleKey);
    try {
      const client = supabaseServiceClient(postgrest.url, serviceRoleKey);
      const services: Services = { ...h.services, keys: new KeyCache(supabaseKeyStore(client)), attribution: supabaseAttributionReader(client) };
      const app = createApp({ services: () => services });
      for (const query of [{ model: ALL }, { model: 'linear', dimension: 'property:channel' }] as Array<Record<string, string>>) {
        const viaRpc = await get('/v1/attribution', { ...period, ...query }, readKey, app);
        const viaSql = await attribution(query);
        expect(viaRpc).toEqual(viaSql);
      }
      expect((await get('/v1/attribution/conversions/order-ann', {}, readKey, app)).body).toEqual((await get('/v1/attribution/conversions/order-ann', {})).body);
      expect(postgrest.calls).toEqual(expect.arrayContaining(['attribution_period', 'attribution_stored_credits', 'attribution_conversion']));
    } finally {
      await postgrest.close();
    }
  });

  it('lets members read their own organization’s paths and touches, and nothing else, and write none', async () => {
    const viewer = await createAuthUser(h.test.db, 'viewer@attribution.test');
    await h.test.db.query(`insert into org_members (org_id, user_id, role) values ($1, $2, 'viewer')`, [h.orgId, viewer]);
    const seen = await asUser(h.test.db, viewer, async (tx) => {
      const count = async (table: string) =>
        (await tx.query<{ own: number; other: number }>(
          `select count(*) filter (where org_id = $1)::int as own, count(*) filter (where org_id <> $1)::int as other from public.${table}`,
          [h.orgId],
        )).rows[0]!;
      return {
        paths: await count('attribution_paths'),
        touches: await count('attribution_touches'),
        write: (await attempt(tx, `update public.attribution_paths set status = 'approved'`)).rowCount,
      };
    });
    expect(seen.paths).toEqual({ own: expect.any(Number), other: 0 });
    expect(seen.paths.own).toBeGreaterThan(3);
    expect(seen.touches.own).toBeGreaterThan(8);
    expect(seen.touches.other).toBe(0);
    expect(seen.write).toBe(0);
    // the backend holds the other organization's path all the same
    expect((await h.test.db.query(`select count(*)::int as n from attribution_paths where org_id <> $1`, [h.orgId])).rows[0]).toEqual({ n: 1 });
  });

  it('splits a touch with several data assets equally among them, in every model', async () => {
    const asset = async () =>
      (await h.test.db.query<{ id: string }>(`insert into data_assets (org_id, name, asset_type) values ($1, 'segment', 'audience') returning id`, [h.orgId])).rows[0]!.id;
    const [a1, a2] = [await asset(), await asset()];
    // gus: a view carrying both segments, then a click carrying the first; a purchase in GBP
    await pixel({ cmp: campaignA, uid: 'gus', ast: `${a2},${a1}`, ts: T - 2 * HOUR });
    await click({ cmp: campaignA, uid: 'gus', ast: a1, ts: T - HOUR });
    await batch([{ event_id: 'order-gus', type: 'purchase', user_key: 'gus', value: 8, currency: 'GBP', occurred_at: T }]);
    await job();
    const { body } = await attribution({ model: 'first_touch,linear,shapley', dimension: 'data_asset' });
    expect(table(body.data, 'GBP')).toEqual({
      first_touch: { [a1]: [0.5, 4], [a2]: [0.5, 4] },
      linear: { [a1]: [0.75, 6], [a2]: [0.25, 2] },
      // the channels {a1, a2} and {a1}: half each, the set's half split between its assets
      shapley: { [a1]: [0.75, 6], [a2]: [0.25, 2] },
    });
    const explained = await get('/v1/attribution/conversions/order-gus', {});
    expect(explained.body.data.touches.map((t: any) => t.channels.data_asset)).toEqual([[a1, a2].sort(), [a1]]);
  });

  it('bounds a path by the user’s previous conversion, even when both arrive in one step', async () => {
    await pixel({ cmp: campaignA, uid: 'ivy', ts: T - 3 * HOUR });
    await pixel({ cmp: campaignB, uid: 'ivy', ts: T - HOUR });
    await batch([
      { event_id: 'order-ivy-1', type: 'purchase', user_key: 'ivy', value: 1, currency: 'CHF', occurred_at: T - 2 * HOUR },
      { event_id: 'order-ivy-2', type: 'purchase', user_key: 'ivy', value: 2, currency: 'CHF', occurred_at: T },
    ]);
    await job();
    const campaignOf = async (id: string) => (await get(`/v1/attribution/conversions/${id}`, {})).body.data.touches.map((t: any) => t.channels.campaign);
    expect(await campaignOf('order-ivy-1')).toEqual([campaignA]);
    expect(await campaignOf('order-ivy-2')).toEqual([campaignB]);
    expect(table((await attribution({ model: 'first_touch' })).body.data, 'CHF')).toEqual({ first_touch: { [campaignA]: [1, 1], [campaignB]: [1, 2] } });
  });

  it('takes a click that arrives after the conversion naming it, and its user', async () => {
    await postback('clickid=late-click-1&event=purchase&payout=5&currency=SEK&tid=late-1');
    await job();
    const before = await get('/v1/attribution/conversions/' + (await h.events()).find((e) => e.click_id === 'late-click-1')!.event_id, {});
    expect(before.body.data).toMatchObject({ attributed: false, touches: [] });
    // the click, recorded late (its time is before the conversion), and an earlier view of its user
    await pixel({ cmp: campaignA, uid: 'jo', ts: Date.now() - 3 * HOUR });
    await batch([{ event_id: 'late-click-event', type: 'click', click_id: 'late-click-1', campaign_id: campaignB, user_key: 'jo', occurred_at: Date.now() - 2 * HOUR }]);
    const result = await job();
    expect(result).toMatchObject({ reopened: 1, paths_changed: 1 });
    const after = await get(`/v1/attribution/conversions/${before.body.data.event_id}`, {});
    expect(after.body.data).toMatchObject({ attributed: true, user_key: 'jo' });
    expect(after.body.data.touches.map((t: any) => [t.kind, t.channels.campaign])).toEqual([['view', campaignA], ['click', campaignB]]);

    // retention pruned the click's touch (never the path): a rebuild keeps the user the click gave it
    await h.test.db.query(`delete from attribution_touches where org_id = $1 and click_id = 'late-click-1'`, [h.orgId]);
    await h.test.db.query(`update attribution_paths set path_pending = true where org_id = $1 and click_id = 'late-click-1'`, [h.orgId]);
    expect(await job()).toMatchObject({ paths_built: 1 });
    const pruned = await get(`/v1/attribution/conversions/${before.body.data.event_id}`, {});
    expect(pruned.body.data).toMatchObject({ user_key: 'jo' });
    expect(pruned.body.data.touches.map((t: any) => t.kind)).toEqual(['view']);
  });
  it('keeps a touch’s scalar properties for property:<name>: an object already in the kept form as it is, others normalised', async () => {
    const kept = async (properties: object) =>
      (await h.test.db.query<{ kept: unknown }>('select private.attribution_touch_properties($1::jsonb) as kept', [JSON.stringify(properties)])).rows[0]!.kept;
    const already = { channel: 'search', rank: 2, paid: true };
    expect(await kept(already)).toEqual(already);
    expect(await kept({})).toBeNull();
    // nested values and nulls dropped, long strings cut to 128 characters
    expect(await kept({ b: { x: 1 }, a: 'y'.repeat(200), c: null, d: [1] })).toEqual({ a: 'y'.repeat(128) });
    // at most 16, the first by name
    const many = Object.fromEntries(Array.from({ length: 20 }, (_, i) => [`k${String(i).padStart(2, '0')}`, i]));
    expect(Object.keys((await kept(many)) as object)).toEqual(Object.keys(many).slice(0, 16));
    // a string of exactly 128 characters is already kept; one of 129 is cut
    expect(await kept({ s: 'z'.repeat(128) })).toEqual({ s: 'z'.repeat(128) });
    expect(await kept({ s: 'é'.repeat(129) })).toEqual({ s: 'é'.repeat(128) });
  });
});
