import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApiKey, createCampaign, createOrganization } from '../../core/admin.ts';
import { runRollup } from '../../scheduled/jobs/rollup.ts';
import { BACKEND } from '../helpers/database.ts';
import { createIngestHarness, type IngestHarness } from '../helpers/ingest.ts';
import { ownEntities } from '../helpers/seed.ts';

// What events count for: server-side senders are not the user, conversions land in their
// click's campaign, ids the organization does not own are never counted under those ids.
const CHROME = 'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36';
const GOOGLEBOT = 'Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)';
// what HTTP clients of servers send: every one of them is a bot to isbot
const SERVER_CLIENTS = ['curl/8.5.0', 'Go-http-client/1.1', 'python-requests/2.32.3', 'axios/1.7.9', 'okhttp/4.12.0', 'Java/21.0.2'];

describe(`counted right (${BACKEND})`, () => {
  let h: IngestHarness;
  let campaignId: string;
  let assetId: string;
  let readKey: string;
  const day = { from: '2026-11-01', to: '2026-12-31' };

  beforeAll(async () => {
    h = await createIngestHarness();
    campaignId = (await createCampaign(h.test.db, { orgId: h.orgId, name: 'Winter', properties: { click_allow_list: ['shop.example.com'] } })).id;
    assetId = randomUUID();
    await ownEntities(h.test.db, h.orgId, { assets: [assetId] });
    readKey = (await createApiKey(h.test.db, { orgId: h.orgId, kind: 'secret', scopes: ['read'] })).key;
  });
  afterAll(() => h?.close());

  const batch = (events: object[], userAgent = 'curl/8.5.0') =>
    h.app.request('/v1/events', {
      method: 'POST',
      headers: { authorization: `Bearer ${h.ingestKey}`, 'user-agent': userAgent, 'x-forwarded-for': '198.51.100.9' },
      body: JSON.stringify({ events }),
    });
  const metric = async (name: string, entityType = 'organization', entityId?: string) => {
    await runRollup(h.test.db);
    const query = new URLSearchParams({ metric: name, entity_type: entityType, ...(entityId ? { entity_id: entityId } : {}), granularity: 'month', ...day });
    const response = await h.app.request(`/v1/metrics?${query}`, { headers: { authorization: `Bearer ${readKey}` } });
    expect(response.status).toBe(200);
    const body = (await response.json()) as { data: Array<{ value: number | null }> };
    return body.data.reduce((sum, point) => sum + (point.value ?? 0), 0);
  };

  it("counts a server's impressions, clicks and data usage as the user's, never the calling client as a bot", async () => {
    const before = { impressions: await metric('impressions'), bots: await metric('bot_impressions'), usage: await metric('data_usage') };
    for (const client of SERVER_CLIENTS) {
      const response = await batch(
        [
          { type: 'impression', campaign_id: campaignId },
          { type: 'click', campaign_id: campaignId },
          { type: 'data_usage', asset_ids: [assetId] },
        ],
        client,
      );
      expect(response.status).toBe(202);
      expect(await response.json()).toMatchObject({ accepted: 3, rejected: [] });
    }
    expect(await metric('impressions')).toBe(before.impressions + SERVER_CLIENTS.length);
    expect(await metric('bot_impressions')).toBe(before.bots);
    expect(await metric('data_usage')).toBe(before.usage + SERVER_CLIENTS.length);
    const stored = (await h.events()).filter((event) => event.context.source === 'batch');
    for (const event of stored) {
      // nothing of the calling server: no device, no bot flag, no IP, no geo
      expect(event.context).not.toHaveProperty('device');
      expect(event.context).not.toHaveProperty('ip');
      expect(event.context).not.toHaveProperty('geo');
      expect(event.context.bot ?? false).toBe(false);
    }
  });

  it("enriches a server-side event from its end user's own context, as a pixel's request", async () => {
    const response = await batch([
      { event_id: 'ctx-user', type: 'impression', context: { user_agent: CHROME, ip: '203.0.113.200', country: 'np', city: 'Kathmandu' } },
      { event_id: 'ctx-bot', type: 'impression', context: { user_agent: GOOGLEBOT } },
      { event_id: 'ctx-denied', type: 'impression', user_key: 'u-1', context: { user_agent: CHROME, ip: '203.0.113.201', consent: 'denied' } },
      { event_id: 'ctx-bad', type: 'impression', context: { ip: 'not-an-ip' } },
    ]);
    expect(response.status).toBe(202);
    const body = (await response.json()) as any;
    expect(body.rejected).toEqual([expect.objectContaining({ index: 3, field: 'context.ip' })]);
    const events = new Map((await h.events()).map((event) => [event.event_id, event]));
    expect(events.get('ctx-user')!.context).toMatchObject({
      device: { type: 'desktop', browser: 'Chrome' },
      bot: false,
      geo: { country: 'NP', city: 'Kathmandu' },
      ip: { truncated: '203.0.113.0' },
    });
    expect(events.get('ctx-user')!.whole).not.toContain('203.0.113.200');
    expect(events.get('ctx-bot')!.context).toMatchObject({ bot: true, device: { type: 'bot' } });
    expect(events.get('ctx-denied')!.user_key).toBeNull();
    expect(events.get('ctx-denied')!.context).not.toHaveProperty('ip');
    // the refused one keeps its user's context enriched, never the raw IP
    const failed = (await h.failedEvents()).find((row) => row.field === 'context.ip');
    expect(failed).toBeDefined();
  });

  it('refuses an end-user context on client-side endpoints, where the request is the user', async () => {
    const response = await h.app.request(`/v1/px?key=${h.publishableKey}`, {
      method: 'POST',
      body: JSON.stringify({ type: 'impression', context: { user_agent: CHROME } }),
    });
    expect(response.status).toBe(400);
    expect(((await response.json()) as any).error.details.rejected[0]).toMatchObject({ field: 'context' });
  });

  it("gives a postback's conversion its click's campaign, creative, assets and user, and counts the usual postback events", async () => {
    const click = await h.app.request(
      `/v1/click?${new URLSearchParams({ key: h.publishableKey, cmp: campaignId, crv: 'crv-snow', ast: assetId, uid: 'shopper-9', url: 'https://shop.example.com/' })}`,
    );
    expect(click.status).toBe(302);
    const clickId = new URL(click.headers.get('location')!).searchParams.get('pclid')!;
    const token = (await createApiKey(h.test.db, { orgId: h.orgId, kind: 'postback' })).key;
    const before = { campaign: await metric('conversions', 'campaign', campaignId), value: await metric('conversion_value', 'campaign', campaignId) };

    for (const [event, txid] of [['purchase', 'o-1'], ['install', ''], ['lead', 'l-1'], ['custom_goal', 'g-1']] as const) {
      const response = await h.app.request(`/v1/postback/${token}?clickid=${clickId}&event=${event}&payout=10&currency=USD${txid ? `&txid=${txid}` : ''}`);
      expect(response.status).toBe(200);
      expect(await response.json()).toMatchObject({ unmatched_click: false, duplicate: false });
    }
    const conversions = (await h.events()).filter((event) => event.click_id === clickId && event.type !== 'click');
    expect(conversions).toHaveLength(4);
    for (const conversion of conversions) {
      expect(conversion).toMatchObject({ campaign_id: campaignId, creative_id: 'crv-snow', asset_ids: [assetId], user_key: 'shopper-9' });
    }
    // purchase, install and lead are conversions; an unknown goal is stored but not counted
    expect(await metric('conversions', 'campaign', campaignId)).toBe(before.campaign + 3);
    expect(await metric('conversion_value', 'campaign', campaignId)).toBe(before.value + 30);
    expect(await metric('conversions', 'creative', 'crv-snow')).toBe(3);
  });

  it("counts the organization's own conversion types, set in its properties without a migration", async () => {
    const org = await createOrganization(h.test.db, { name: 'Sale Co', properties: { conversion_types: ['sale'] } });
    const key = (await createApiKey(h.test.db, { orgId: org.id, kind: 'secret', scopes: ['ingest', 'read'] })).key;
    const send = (type: string) =>
      h.app.request('/v1/events', { method: 'POST', headers: { authorization: `Bearer ${key}` }, body: JSON.stringify({ events: [{ type, value: 5, currency: 'EUR' }] }) });
    for (const type of ['sale', 'sale', 'purchase', 'conversion']) expect((await send(type)).status).toBe(202);
    await runRollup(h.test.db);
    const response = await h.app.request(`/v1/metrics?${new URLSearchParams({ metric: 'conversions', granularity: 'month', ...day })}`, {
      headers: { authorization: `Bearer ${key}` },
    });
    const total = ((await response.json()) as any).data.reduce((sum: number, point: any) => sum + (point.value ?? 0), 0);
    expect(total).toBe(2);
  });

  it('keeps an event naming a campaign or data asset the organization neither owns nor licenses, never counting it under that id', async () => {
    const other = await createOrganization(h.test.db, { name: 'Other Co' });
    const foreignCampaign = (await createCampaign(h.test.db, { orgId: other.id, name: 'Theirs' })).id;
    const licensedAsset = randomUUID();
    const unlicensedAsset = randomUUID();
    await ownEntities(h.test.db, other.id, { assets: [licensedAsset, unlicensedAsset] });
    await h.test.db.query(
      `insert into permissions (org_id, grantee_type, grantee_id, resource_type, resource_id, action) values ($1, 'organization', $2, 'data_asset', $3, 'use')`,
      [other.id, h.orgId, licensedAsset],
    );
    const pixel = await h.app.request(`/v1/px?${new URLSearchParams({ key: h.publishableKey, eid: 'foreign-1', cmp: foreignCampaign, ast: `${licensedAsset},${unlicensedAsset}` })}`);
    expect(pixel.status).toBe(200);
    const response = await batch([{ event_id: 'foreign-2', type: 'data_usage', campaign_id: randomUUID(), asset_ids: [unlicensedAsset, licensedAsset] }]);
    expect(response.status).toBe(202);

    const events = new Map((await h.events()).map((event) => [event.event_id, event]));
    expect(events.get('foreign-1')).toMatchObject({ campaign_id: null, asset_ids: [licensedAsset] });
    expect(events.get('foreign-1')!.context.unowned).toEqual({ campaign_id: foreignCampaign, asset_ids: [unlicensedAsset] });
    expect(events.get('foreign-2')).toMatchObject({ campaign_id: null, asset_ids: [licensedAsset] });
    expect(events.get('foreign-2')!.context.unowned.asset_ids).toEqual([unlicensedAsset]);
    await runRollup(h.test.db);
    const { rows } = await h.test.db.query<{ entity_id: string }>(
      `select distinct entity_id from metrics where org_id = $1 and entity_type in ('campaign', 'data_asset')`,
      [h.orgId],
    );
    const counted = rows.map((row) => row.entity_id);
    expect(counted).toContain(licensedAsset);
    expect(counted).not.toContain(foreignCampaign);
    expect(counted).not.toContain(unlicensedAsset);
  });

  it('answers HEAD on the pixel with the GIF headers and records nothing', async () => {
    const before = (await h.events()).length;
    const response = await h.app.request(`/v1/px?key=${h.publishableKey}&eid=head-1`, { method: 'HEAD' });
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toBe('image/gif');
    expect((await response.arrayBuffer()).byteLength).toBe(0);
    expect((await h.events()).length).toBe(before);
  });
});
