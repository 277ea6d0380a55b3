import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApiKey, createCampaign } from '../../core/admin.ts';
import { BACKEND } from '../helpers/database.ts';
import { createIngestHarness, type IngestHarness } from '../helpers/ingest.ts';

describe(`S2S postbacks /v1/postback/:token (${BACKEND})`, () => {
  let h: IngestHarness;
  let token: string;
  let mappedToken: string;
  let clickId: string;

  beforeAll(async () => {
    h = await createIngestHarness();
    token = (await createApiKey(h.test.db, { orgId: h.orgId, kind: 'postback' })).key;
    mappedToken = (
      await createApiKey(h.test.db, {
        orgId: h.orgId,
        kind: 'postback',
        properties: {
          param_map: { aff_click: 'click_id', amt: 'value', state: 'status', order: 'txid' },
          status_map: { lead: 'pending', sale: 'approved', declined: 'rejected' },
        },
      })
    ).key;
    // a real click to convert
    const campaign = await createCampaign(h.test.db, { orgId: h.orgId, name: 'Offers', properties: { click_allow_list: ['shop.example.com'] } });
    const click = await h.app.request(`/v1/click?key=${h.publishableKey}&cmp=${campaign.id}&url=${encodeURIComponent('https://shop.example.com/')}`);
    clickId = new URL(click.headers.get('location')!).searchParams.get('pclid')!;
  });
  afterAll(() => h?.close());

  const get = (query: string, tok = token) => h.app.request(`/v1/postback/${tok}?${query}`);
  const conversions = async (txid?: string) =>
    (await h.events()).filter((event) => event.type !== 'click' && (txid === undefined || event.properties.txid === txid));

  it('records a conversion against its click, and a retry counts once', async () => {
    const first = await get(`clickid=${clickId}&payout=12.50&currency=usd&tid=order-1&goal=purchase`);
    expect(first.status).toBe(200);
    const body = (await first.json()) as any;
    expect(body).toMatchObject({ duplicate: false, status: 'approved', status_change: false, unmatched_click: false });
    expect(body.event_id).toMatch(/^pb_[0-9a-f]{40}$/);
    for (let i = 0; i < 3; i += 1) {
      const retry = (await (await get(`clickid=${clickId}&payout=12.50&currency=usd&tid=order-1&goal=purchase`)).json()) as any;
      expect(retry).toMatchObject({ event_id: body.event_id, duplicate: true });
    }
    const stored = await conversions('order-1');
    expect(stored).toHaveLength(1);
    expect(stored[0]).toMatchObject({ type: 'conversion', click_id: clickId, value: '12.5', currency: 'USD', status: 'approved', properties: { txid: 'order-1', goal: 'purchase' } });
  });

  it('keeps concurrent retries to one conversion', async () => {
    const answers = await Promise.all(
      Array.from({ length: 8 }, async () => (await (await get(`subid=${clickId}&sum=3&tid=order-race`)).json()) as { duplicate: boolean }),
    );
    expect(answers.filter((answer) => !answer.duplicate)).toHaveLength(1);
    expect(await conversions('order-race')).toHaveLength(1);
  });

  it('records status changes pending → approved → rejected, and refuses going back', async () => {
    const pending = (await (await get(`cid=${clickId}&revenue=40&tid=order-2&status=pending`)).json()) as any;
    expect(pending).toMatchObject({ status: 'pending', status_change: false });
    const approved = (await (await get(`cid=${clickId}&revenue=40&tid=order-2&cnv_status=approved`)).json()) as any;
    expect(approved).toMatchObject({ status: 'approved', status_change: true, duplicate: false });
    // a late retry of the earlier pending postback changes nothing
    const lateRetry = (await (await get(`cid=${clickId}&revenue=40&tid=order-2&status=pending`)).json()) as any;
    expect(lateRetry).toMatchObject({ duplicate: true, status: 'approved' });
    const chargeback = (await (await get(`cid=${clickId}&tid=order-2&status=rejected`)).json()) as any;
    expect(chargeback).toMatchObject({ status: 'rejected', status_change: true });
    expect((await conversions('order-2')).map((event) => event.status).sort()).toEqual(['approved', 'pending', 'rejected']);

    // approved straight away, then pending: not a transition that exists
    await get(`cid=${clickId}&tid=order-3&status=approved`);
    const back = await get(`cid=${clickId}&tid=order-3&status=pending`);
    expect(back.status).toBe(409);
    const error = ((await back.json()) as any).error;
    expect(error).toMatchObject({ code: 'conflict', details: { field: 'status', reason: 'invalid_status_transition', current_status: 'approved' } });
    expect(error.message).toMatch(/approved → pending is not allowed/);
    // rejected, then approved
    await get(`cid=${clickId}&tid=order-4&status=pending`);
    await get(`cid=${clickId}&tid=order-4&status=rejected`);
    expect((await get(`cid=${clickId}&tid=order-4&status=approved`)).status).toBe(409);
    expect((await conversions('order-4')).map((event) => event.status).sort()).toEqual(['pending', 'rejected']);
    const failed = (await h.failedEvents()).filter((row) => row.reason_code === 'invalid_status_transition');
    expect(failed.map((row) => new URLSearchParams(row.payload).get('tid')).sort()).toEqual(['order-3', 'order-4']);
  });

  it('dedups per click and event type when no txid comes', async () => {
    await get(`click_id=${clickId}&event=install`);
    await get(`click_id=${clickId}&event=install`);
    await get(`click_id=${clickId}&event=first_open`);
    const events = (await h.events()).filter((event) => event.type === 'install' || event.type === 'first_open');
    expect(events.map((event) => event.type).sort()).toEqual(['first_open', 'install']);
  });

  it('stores an unknown click id, flagged, never dropped', async () => {
    const answer = (await (await get('clickid=never-seen-click&tid=order-x')).json()) as any;
    expect(answer).toMatchObject({ duplicate: false, unmatched_click: true });
    const stored = (await h.events()).find((event) => event.click_id === 'never-seen-click');
    expect(stored!.context.unmatched_click).toBe(true);
  });

  it('reads form and JSON bodies, and the token’s own parameter names', async () => {
    const form = await h.app.request(`/v1/postback/${token}`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: `clickid=${clickId}&payout=5&tid=order-form`,
    });
    expect(form.status).toBe(200);
    const json = await h.app.request(`/v1/postback/${token}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ clickid: clickId, payout: 6.5, transaction_id: 'order-json', currency: 'EUR' }),
    });
    expect(json.status).toBe(200);
    const mapped = await get(`aff_click=${clickId}&amt=9.99&state=pending&order=order-map`, mappedToken);
    expect(await mapped.json()).toMatchObject({ status: 'pending' });
    expect((await conversions('order-json'))[0]).toMatchObject({ value: '6.5', currency: 'EUR' });
    expect((await conversions('order-map'))[0]).toMatchObject({ value: '9.99', status: 'pending' });
    // the network's own status words, through the token's status_map
    expect(await (await get(`aff_click=${clickId}&state=lead&order=order-words`, mappedToken)).json()).toMatchObject({ status: 'pending' });
    expect(await (await get(`aff_click=${clickId}&state=SALE&order=order-words`, mappedToken)).json()).toMatchObject({ status: 'approved', status_change: true });
  });

  it('refuses unreplaced macros, naming the parameter and the macro', async () => {
    const cases: Array<[string, string, string]> = [
      ['clickid={clickid}&payout=1', 'clickid', '{clickid}'],
      [`clickid=${clickId}&ts=(click-ts)`, 'ts', '(click-ts)'],
      ['subid=[CLICK_ID]', 'subid', '[CLICK_ID]'],
      [`clickid=${clickId}&payout=%25%25PAYOUT%25%25`, 'payout', '%%PAYOUT%%'],
      [`clickid=${clickId}&tid=\${transaction_id}`, 'tid', '${transaction_id}'],
    ];
    for (const [query, field, macro] of cases) {
      const response = await get(query);
      const error = ((await response.json()) as any).error;
      expect({ query, status: response.status, field: error.details.field, reason: error.details.reason }).toEqual({ query, status: 400, field, reason: 'unreplaced_macro' });
      expect(error.message).toContain(macro);
    }
  });

  it('refuses bad values, statuses, currencies and tokens with clear errors', async () => {
    const checks: Array<[string, number, string]> = [
      [`clickid=${clickId}&payout=12,50`, 400, 'value'],
      [`clickid=${clickId}&payout=Infinity`, 400, 'value'],
      [`clickid=${clickId}&status=paid`, 400, 'status'],
      [`clickid=${clickId}&payout=1&currency=DOLLARS`, 400, 'currency'],
      ['payout=1', 400, 'click_id'],
      [`clickid=${clickId}&subid=other`, 400, 'subid'],
    ];
    for (const [query, status, field] of checks) {
      const response = await get(query);
      expect({ query, status: response.status, field: ((await response.json()) as any).error.details.field }).toEqual({ query, status, field });
    }
    expect((await h.app.request(`/v1/postback/pb_${'0'.repeat(32)}?clickid=x`)).status).toBe(401);
    expect((await h.app.request(`/v1/postback/${h.publishableKey}?clickid=x`)).status).toBe(403);
  });

  it("takes the end user's IP, agent and country from the network's parameters, never the network's own", async () => {
    const chrome = 'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36';
    const response = await h.app.request(`/v1/postback/${token}?clickid=${clickId}&tid=order-ctx&user_ip=203.0.113.44&ua=${encodeURIComponent(chrome)}&country_code=de`, {
      headers: { 'x-forwarded-for': '192.0.2.200', 'user-agent': 'curl/8.0', 'cf-ipcountry': 'US' },
    });
    expect(response.status).toBe(200);
    const [event] = await conversions('order-ctx');
    expect(event!.context).toMatchObject({ source: 'postback', geo: { country: 'DE' }, ip: { truncated: '203.0.113.0' }, device: { browser: 'Chrome' }, bot: false });
    expect(event!.whole).not.toMatch(/203\.0\.113\.44|192\.0\.2|curl/);
    expect(event!.properties).not.toHaveProperty('user_ip');

    // without them: no device, no IP, no geo (the calling server is not the user)
    await h.app.request(`/v1/postback/${token}?clickid=${clickId}&tid=order-noctx`, { headers: { 'x-forwarded-for': '192.0.2.201', 'user-agent': 'curl/8.0' } });
    const [bare] = await conversions('order-noctx');
    expect(bare!.context.ip).toBeUndefined();
    expect(bare!.context.geo).toBeUndefined();
    expect(bare!.context.device?.type ?? 'unknown').toBe('unknown');

    // the token's param_map names them too; a country that is no two-letter code stays a property
    const custom = (await createApiKey(h.test.db, { orgId: h.orgId, kind: 'postback', properties: { param_map: { visitor: 'context.ip', agent: 'user_agent' } } })).key;
    expect((await get(`clickid=${clickId}&tid=order-map-ctx&visitor=2001:db8:1:2::7&agent=Mozilla%2F5.0&country=USA`, custom)).status).toBe(200);
    const [mapped] = await conversions('order-map-ctx');
    expect(mapped!.context.ip.truncated).toBe('2001:db8:1::');
    expect(mapped!.properties).toMatchObject({ country: 'USA' });

    // a bad IP names the field; the failed event keeps no raw value of it
    const bad = await get(`clickid=${clickId}&tid=order-bad-ip&ip=999.1.1.1`);
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as any).error.details).toMatchObject({ field: 'context.ip' });
    const failed = (await h.failedEvents()).find((row) => row.payload.includes('order-bad-ip'))!;
    expect(failed.payload).not.toContain('999.1.1.1');
    expect(failed.properties.key_id).toMatch(/^[0-9a-f-]{36}$/);
  });

  it('answers 4xx, never 5xx, to names that are no map entries and to text that cannot be stored', async () => {
    const cases: Array<[string, string]> = [
      [`aff_click=${clickId}&state=constructor&order=o-proto-1`, mappedToken],
      [`aff_click=${clickId}&state=__proto__&order=o-proto-2`, mappedToken],
      [`aff_click=${clickId}&state=hasOwnProperty&order=o-proto-3`, mappedToken],
      [`clickid=${clickId}&tid=o-nul%00`, token],
      [`clickid=${clickId}&tid=o-nul-name&a%00b=1`, token],
    ];
    for (const [query, tok] of cases) {
      const response = await get(query, tok);
      expect({ query, status: response.status }).toEqual({ query, status: 400 });
      expect(((await response.json()) as any).error.code).toBe('validation_failed');
    }
    expect((await h.failedEvents()).filter((row) => /o-nul|o-proto-\d/.test(row.payload))).toHaveLength(5);
    // parameters named like Object.prototype's members are parameters like any other
    const protoNames = await get(`clickid=${clickId}&tid=o-proto-ok&constructor=1&toString=2&__proto__=3`, mappedToken);
    expect(protoNames.status).toBe(200);
    const kept = (await conversions('o-proto-ok'))[0]!.properties;
    expect(kept).toMatchObject({ constructor: '1', toString: '2' });
    const lone = await h.app.request(`/v1/postback/${token}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: `{"clickid": "${clickId}", "tid": "o-lone", "note": "\\ud800"}`,
    });
    expect(lone.status).toBe(400);
    expect(((await lone.json()) as any).error.details).toMatchObject({ reason: 'invalid_characters' });
  });
});
