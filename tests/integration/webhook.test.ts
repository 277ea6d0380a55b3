import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCampaign, createIntegration } from '../../core/admin.ts';
import { signWebhook, webhookSecret } from '../../core/webhooks/delivery.ts';
import { runCli } from '../helpers/cli.ts';
import { BACKEND } from '../helpers/database.ts';
import { createIngestHarness, SERVER_SECRET, type IngestHarness } from '../helpers/ingest.ts';

// Three notification shapes modelled on what DSPs send: an OpenRTB-style win notice (nested
// seatbid[].bid[], price in the bid, currency and time on the envelope), a batched
// impression/click report, and a daily spend report in micros.
const WIN_MAPPING = {
  events_path: 'seatbid[*].bid',
  fields: {
    type: { const: 'win' },
    event_id: 'id',
    value: 'price',
    currency: '$root.cur',
    occurred_at: { path: '$root.ts', transform: 'unix_seconds' },
    campaign_id: { path: 'cid', lookup: 'external_campaign_id' },
    creative_id: 'crid',
    'properties.auction_id': '$root.id',
    'properties.impid': 'impid',
  },
};
const REPORT_MAPPING = {
  events_path: 'data.events',
  fields: {
    type: { path: 'event_type', map: { imp: 'impression', clk: 'click' } },
    event_id: 'event_id',
    occurred_at: { path: 'timestamp_ms', transform: 'unix_ms' },
    campaign_id: { path: 'line_item_id', lookup: 'external_campaign_id' },
    creative_id: 'creative.id',
    user_key: 'user.id',
  },
};
const SPEND_MAPPING = {
  events_path: 'rows',
  fields: {
    type: { const: 'spend' },
    value: { path: 'spend_micros', transform: 'micros' },
    currency: { path: '$root.currency', transform: 'uppercase' },
    occurred_at: 'hour',
    campaign_id: { path: 'campaign_external_id', lookup: 'external_campaign_id' },
    'properties.impressions': 'impressions',
  },
};

describe(`signed DSP webhooks POST /v1/webhooks/:integration (${BACKEND})`, () => {
  let h: IngestHarness;
  let campaignId: string;
  const integrations: Record<string, string> = {};
  const now = () => Math.floor(Date.now() / 1000);
  const t0 = Math.floor(Date.now() / 1000) - 600;

  beforeAll(async () => {
    h = await createIngestHarness();
    campaignId = (await createCampaign(h.test.db, { orgId: h.orgId, name: 'DSP line', properties: { dsp_settings: { external_campaign_id: 'dsp-88412' } } })).id;
    for (const [name, mapping] of Object.entries({ win: WIN_MAPPING, report: REPORT_MAPPING, spend: SPEND_MAPPING, canonical: undefined })) {
      integrations[name] = (await createIntegration(h.test.db, { orgId: h.orgId, name, mapping })).id;
    }
  });
  afterAll(() => h?.close());

  const deliver = (name: string, body: unknown, options: { t?: number; signature?: string | null; raw?: string } = {}) => {
    const text = options.raw ?? JSON.stringify(body);
    const id = integrations[name] ?? name;
    const signature =
      options.signature === undefined ? signWebhook(webhookSecret(SERVER_SECRET, id), options.t ?? now(), text) : options.signature;
    return h.app.request(`/v1/webhooks/${id}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(signature ? { 'x-precise-signature': signature } : {}) },
      body: text,
    });
  };
  const stored = async (type: string) => (await h.events()).filter((event) => event.type === type);

  it('maps a win notice: nested bids, envelope currency and time, external campaign id', async () => {
    const notice = {
      id: 'auction-7f3',
      cur: 'USD',
      ts: t0,
      seatbid: [
        { seat: 'seat-1', bid: [{ id: 'bid-1', impid: '1', price: 1.25, crid: 'crv-300x250', cid: 'dsp-88412' }] },
        { seat: 'seat-2', bid: [{ id: 'bid-2', impid: '2', price: 0.8, crid: 'crv-728x90', cid: 'dsp-88412' }] },
      ],
    };
    const response = await deliver('win', notice);
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({ accepted: 2, duplicates: 0, rejected: [] });
    const wins = await stored('win');
    expect(wins.map((event) => [event.event_id, event.value, event.currency, event.creative_id, event.campaign_id])).toEqual([
      ['bid-1', '1.25', 'USD', 'crv-300x250', campaignId],
      ['bid-2', '0.8', 'USD', 'crv-728x90', campaignId],
    ]);
    expect(wins[0]!.occurred_at.getTime()).toBe(t0 * 1000);
    expect(wins[0]!.properties).toMatchObject({ auction_id: 'auction-7f3', impid: '1', external_campaign_id: 'dsp-88412' });
    expect(wins[0]!.context.source).toBe('webhook');
  });

  it('maps a batched impression/click report, mapping its event names', async () => {
    const report = {
      report_id: 'r-20261124-01',
      data: {
        events: [
          { event_type: 'imp', event_id: 'ev-1', timestamp_ms: t0 * 1000, line_item_id: 'dsp-88412', creative: { id: 'crv-a' }, user: { id: 'dev-1' } },
          { event_type: 'clk', event_id: 'ev-2', timestamp_ms: t0 * 1000 + 5000, line_item_id: 'dsp-88412', creative: { id: 'crv-a' }, user: { id: 'dev-1' } },
          { event_type: 'imp', event_id: 'ev-3', timestamp_ms: t0 * 1000, line_item_id: 'dsp-unknown', creative: { id: 'crv-b' } },
        ],
      },
    };
    const body = (await (await deliver('report', report)).json()) as any;
    expect(body).toEqual({ accepted: 3, duplicates: 0, rejected: [] });
    const rows = (await h.events()).filter((event) => event.event_id.startsWith('ev-'));
    expect(rows.map((event) => [event.event_id, event.type, event.user_key])).toEqual([
      ['ev-1', 'impression', 'dev-1'],
      ['ev-3', 'impression', null],
      ['ev-2', 'click', 'dev-1'],
    ].sort((a, b) => String(a[0]).localeCompare(String(b[0]))) as any);
    const unknown = rows.find((event) => event.event_id === 'ev-3')!;
    expect(unknown.campaign_id).toBeNull();
    expect(unknown.context.unmatched_campaign).toBe('dsp-unknown');
  });

  it('maps a spend report in micros; a bad row is refused by index and kept', async () => {
    const spend = {
      date: '2026-11-23',
      currency: 'eur',
      rows: [
        { campaign_external_id: 'dsp-88412', hour: new Date((t0 - 3600) * 1000).toISOString(), spend_micros: 12_345_678, impressions: 1000 },
        { campaign_external_id: 'dsp-88412', hour: 'yesterday', spend_micros: 1_000_000, impressions: 10 },
      ],
    };
    const body = (await (await deliver('spend', spend)).json()) as any;
    expect(body.accepted).toBe(1);
    expect(body.rejected).toEqual([{ index: 1, code: 'invalid_field', message: expect.stringMatching(/occurred_at/), field: 'occurred_at' }]);
    const rows = await stored('spend');
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({ value: '12.345678', currency: 'EUR', campaign_id: campaignId, properties: { impressions: 1000 } });
    expect(rows[0]!.event_id).toMatch(/^wh_[0-9a-f]{40}$/);
    const failed = (await h.failedEvents()).filter((row) => row.source === 'webhook');
    expect(failed).toHaveLength(1);
    expect(JSON.parse(failed[0]!.payload)).toMatchObject({ hour: 'yesterday' });

    // the DSP resends the report (a new signature): the same rows, counted once
    const again = (await (await deliver('spend', spend, { t: now() - 30 })).json()) as any;
    expect(again).toMatchObject({ accepted: 0, duplicates: 1 });
    expect(await stored('spend')).toHaveLength(1);
  });

  it('accepts canonical events without a mapping', async () => {
    const body = (await (await deliver('canonical', { events: [{ event_id: 'can-1', type: 'impression', campaign_id: campaignId }] })).json()) as any;
    expect(body).toEqual({ accepted: 1, duplicates: 0, rejected: [] });
  });

  it('counts an event a delivery repeats once, as the batch API does', async () => {
    const twice = { event_id: 'twice-1', type: 'click', campaign_id: campaignId };
    const response = await deliver('canonical', { events: [twice, { ...twice }, { event_id: 'once-1', type: 'click' }] });
    expect(await response.json()).toEqual({ accepted: 2, duplicates: 1, rejected: [] });
    const events = (await h.events()).filter((event) => event.event_id === 'twice-1' || event.event_id === 'once-1');
    expect(events.map((event) => event.event_id).sort()).toEqual(['once-1', 'twice-1']);
  });

  it('refuses a replayed delivery', async () => {
    const payload = JSON.stringify({ events: [{ event_id: 'replay-1', type: 'click' }] });
    const signature = signWebhook(webhookSecret(SERVER_SECRET, integrations.canonical!), now(), payload);
    expect((await deliver('canonical', null, { raw: payload, signature })).status).toBe(200);
    const replay = await deliver('canonical', null, { raw: payload, signature });
    expect(replay.status).toBe(409);
    expect(((await replay.json()) as any).error.details.reason).toBe('replayed_delivery');
  });

  it('answers every verification failure with the same 401 that says nothing more', async () => {
    const payload = JSON.stringify({ events: [{ type: 'click' }] });
    const secret = webhookSecret(SERVER_SECRET, integrations.canonical!);
    const failures = [
      await deliver('canonical', null, { raw: payload, signature: null }),
      await deliver('canonical', null, { raw: payload, signature: 'garbage' }),
      await deliver('canonical', null, { raw: payload, signature: signWebhook(secret, now() - 400, payload) }),
      await deliver('canonical', null, { raw: payload, signature: signWebhook(secret, now() + 400, payload) }),
      await deliver('canonical', null, { raw: payload, signature: signWebhook(secret, now(), `${payload} `) }),
      await deliver('canonical', null, { raw: payload, signature: signWebhook(webhookSecret(SERVER_SECRET, integrations.win!), now(), payload) }),
      await deliver('00000000-0000-4000-8000-000000000000', null, { raw: payload, signature: signWebhook(secret, now(), payload) }),
      await deliver('not-a-uuid', null, { raw: payload, signature: signWebhook(secret, now(), payload) }),
    ];
    const bodies = await Promise.all(failures.map(async (response) => [response.status, ((await response.json()) as any).error.message]));
    expect(new Set(bodies.map((body) => JSON.stringify(body)))).toEqual(new Set([JSON.stringify([401, 'signature verification failed'])]));
    // a signature with several v1 values, one of them right, passes (secret rotation)
    const t = now();
    const both = `t=${t},v1=${'0'.repeat(64)},${signWebhook(secret, t, payload).split(',')[1]}`;
    expect((await deliver('canonical', null, { raw: payload, signature: both })).status).toBe(200);
  });

  it('creates an integration from the CLI with a mapping file, and its secret verifies', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'precise-mapping-'));
    await writeFile(path.join(dir, 'mapping.json'), JSON.stringify(REPORT_MAPPING));
    await writeFile(path.join(dir, 'bad.json'), JSON.stringify({ events_path: 'x', fields: { type: { transform: 'rot13' } } }));
    const run = async (...argv: string[]) =>
      runCli({ DATABASE_URL: await h.test.connectionUrl(), PRECISE_SECRET: SERVER_SECRET, PRECISE_DATA_DIR: dir }, ...argv);
    const created = await run('integration', 'create', '--org', h.orgId, '--name', 'Example DSP', '--mapping', path.join(dir, 'mapping.json'), '--json');
    expect(created.code).toBe(0);
    const { id, secret, webhook_url } = JSON.parse(created.out);
    expect(secret).toMatch(/^whsec_[A-Za-z0-9_-]{43}$/);
    expect(webhook_url).toMatch(new RegExp(`/v1/webhooks/${id}$`));
    const { rows } = await h.test.db.query<{ whole: string }>('select row_to_json(i)::text as whole from integrations i where id = $1', [id]);
    expect(rows[0]!.whole).not.toContain(secret.slice(6));
    const payload = JSON.stringify({ data: { events: [{ event_type: 'clk', event_id: 'cli-1', timestamp_ms: Date.now() }] } });
    const response = await h.app.request(`/v1/webhooks/${id}`, {
      method: 'POST',
      headers: { 'x-precise-signature': signWebhook(secret, now(), payload) },
      body: payload,
    });
    expect(await response.json()).toMatchObject({ accepted: 1 });
    const bad = await run('integration', 'create', '--org', h.orgId, '--name', 'Bad', '--mapping', path.join(dir, 'bad.json'));
    expect(bad.code).toBe(2);
    expect(bad.err).toMatch(/mapping\.fields\.type/);
  });

  it('refuses a replayed delivery however its signature header is written', async () => {
    const payload = JSON.stringify({ events: [{ event_id: 'replay-forms', type: 'click' }] });
    const t = now();
    const v1 = signWebhook(webhookSecret(SERVER_SECRET, integrations.canonical!), t, payload).split('v1=')[1]!;
    expect((await deliver('canonical', null, { raw: payload, signature: `t=${t},v1=${v1}` })).status).toBe(200);
    const variants = [
      `t=${t}, v1=${v1}`,
      `v1=${v1},t=${t}`,
      `t=${t},v1=${v1},`,
      `t=${t},v1=${v1},v0=${'a'.repeat(64)}`,
      `t=${t},v1=${'0'.repeat(64)},v1=${v1}`,
      `t=${t},v1=${v1.toUpperCase()}`,
      `t=0${t},v1=${v1}`,
    ];
    for (const signature of variants) {
      const response = await deliver('canonical', null, { raw: payload, signature });
      expect({ signature, status: response.status }).toEqual({ signature, status: 409 });
    }
    expect((await h.events()).filter((event) => event.event_id === 'replay-forms')).toHaveLength(1);
  });

  it('verifies the body as bytes: non-ASCII text passes, bytes that are no UTF-8 are a 400', async () => {
    const text = JSON.stringify({ events: [{ event_id: 'utf8-1', type: 'impression', properties: { city: 'Zürich – 東京' } }] });
    expect((await deliver('canonical', null, { raw: text })).status).toBe(200);
    expect((await h.events()).find((event) => event.event_id === 'utf8-1')!.properties.city).toBe('Zürich – 東京');
    const bytes = new Uint8Array([...new TextEncoder().encode('{"events":[{"type":"click","properties":{"x":"'), 0xff, 0xfe, ...new TextEncoder().encode('"}}]}')]);
    const t = now();
    const secret = webhookSecret(SERVER_SECRET, integrations.canonical!);
    const response = await h.app.request(`/v1/webhooks/${integrations.canonical}`, {
      method: 'POST',
      headers: { 'x-precise-signature': signWebhook(secret, t, bytes) },
      body: bytes,
    });
    expect(response.status).toBe(400);
    expect(((await response.json()) as any).error.details.field).toBe('body');
  });

  it("maps the end user's context (context.ip, context.user_agent, context.country), never the DSP's own", async () => {
    const mapping = {
      events_path: 'events',
      fields: { type: { const: 'impression' }, event_id: 'id', 'context.ip': 'device.ip', 'context.user_agent': 'device.ua', 'context.country': '$root.geo' },
    };
    const id = (await createIntegration(h.test.db, { orgId: h.orgId, name: 'ctx', mapping })).id;
    integrations.ctx = id;
    const chrome = 'Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36';
    const text = JSON.stringify({ geo: 'fr', events: [{ id: 'ctx-1', device: { ip: '198.51.100.61', ua: chrome } }, { id: 'ctx-2', device: { ip: 'not-an-ip' } }] });
    const response = await h.app.request(`/v1/webhooks/${id}`, {
      method: 'POST',
      headers: { 'x-precise-signature': signWebhook(webhookSecret(SERVER_SECRET, id), now(), text), 'x-forwarded-for': '192.0.2.9', 'user-agent': 'DSP-Notifier/2' },
      body: text,
    });
    expect(await response.json()).toMatchObject({ accepted: 1, rejected: [{ index: 1, field: 'context.ip' }] });
    const event = (await h.events()).find((row) => row.event_id === 'ctx-1')!;
    expect(event.context).toMatchObject({ source: 'webhook', geo: { country: 'FR' }, ip: { truncated: '198.51.100.0' }, device: { browser: 'Chrome' } });
    expect(event.whole).not.toMatch(/198\.51\.100\.61|192\.0\.2\.9|DSP-Notifier/);
    const failed = (await h.failedEvents()).find((row) => row.properties.integration_id === id)!;
    expect(failed.payload).not.toContain('not-an-ip');
    expect(JSON.parse(failed.payload)).toEqual({ id: 'ctx-2', device: {} });
  });

  it('answers a body the mapping finds no events in with a 400 naming events_path, and keeps it', async () => {
    const response = await deliver('report', { report_id: 'r-empty', rows: [{ event_type: 'imp' }] });
    expect(response.status).toBe(400);
    const error = ((await response.json()) as any).error;
    expect(error).toMatchObject({ code: 'validation_failed', details: { field: 'events_path', reason: 'no_events', events_path: 'data.events' } });
    const failed = (await h.failedEvents()).filter((row) => row.reason_code === 'no_events' && row.payload.includes('r-empty'));
    expect(failed).toHaveLength(1);
    expect(failed[0]!.properties).toMatchObject({ integration_id: integrations.report, webhook_body: true });
  });

  it('refuses a deep item by its own path, never a 500, and lands its siblings', async () => {
    const deepItem = `{"events":[{"event_id":"deep-sibling","type":"click"},{"type":"click","properties":{"a":${'{"a":'.repeat(5000)}1${'}'.repeat(5000)}}}]}`;
    const response = await deliver('canonical', null, { raw: deepItem });
    expect(response.status).toBe(200);
    const body = (await response.json()) as any;
    expect(body.accepted).toBe(1);
    expect(body.rejected).toEqual([expect.objectContaining({ index: 1, code: 'too_deep' })]);
    expect((await h.events()).some((event) => event.event_id === 'deep-sibling')).toBe(true);
    // a body that is nothing but nesting, and a report whose mapped field is nested thousands deep
    const deep = `${'['.repeat(5000)}${']'.repeat(5000)}`;
    const deepReport = `{"data":{"events":[{"event_type":"imp","creative":${'{"id":'.repeat(3000)}"x"${'}'.repeat(3000)}}]}}`;
    for (const [name, raw] of [['canonical', deep], ['report', deepReport]] as const) {
      const answer = await deliver(name, null, { raw });
      expect(answer.status).toBeGreaterThanOrEqual(200);
      expect(answer.status).toBeLessThan(500);
    }
  });
});
