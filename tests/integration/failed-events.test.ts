import { randomUUID } from 'node:crypto';
import { canonicalEvent } from '../helpers/events.ts';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CanonicalEvent } from '../../core/events/canonical.ts';
import { failureRecord } from '../../core/ingest/batch.ts';
import { sqlEventWriter } from '../../core/ingest/writer.ts';
import { runCli } from '../helpers/cli.ts';
import { BACKEND } from '../helpers/database.ts';
import { createApiKey, createIntegration } from '../../core/admin.ts';
import { KeyCache, sqlKeyStore } from '../../core/auth.ts';
import { sqlWebhookStore, Webhooks } from '../../core/webhooks/integrations.ts';
import { replayFailedEvents } from '../../core/ingest/replay.ts';
import { signWebhook, webhookSecret } from '../../core/webhooks/delivery.ts';
import { createIngestHarness, SERVER_SECRET, type IngestHarness } from '../helpers/ingest.ts';

describe(`failed events: stored, listed, replayed (${BACKEND})`, () => {
  let h: IngestHarness;
  beforeAll(async () => {
    h = await createIngestHarness();
  });
  afterAll(() => h?.close());

  const canonical = (id: string, overrides: Partial<CanonicalEvent> = {}) =>
    canonicalEvent(h.orgId, id, {
      id_source: 'client',
      occurred_at: new Date(Date.now() - 3_600_000).toISOString(),
      received_at: new Date(Date.now() - 3_500_000).toISOString(),
      creative_id: 'crv-1',
      properties: { n: 1 },
      context: { source: 'batch' },
      ...overrides,
    });

  const cli = async (...argv: string[]) =>
    runCli({ DATABASE_URL: await h.test.connectionUrl(), PRECISE_DATA_DIR: '/nonexistent' }, ...argv);

  it('keeps a row the database refuses without sinking the rest of its batch', async () => {
    const result = await sqlEventWriter(h.test.db).write({
      events: [canonical('slow-ok-1'), canonical('slow-bad', { type: 'Not Snake' }), canonical('slow-ok-2')],
      failures: [],
    });
    expect(result.inserted).toBe(2);
    expect([...result.failed.keys()]).toEqual([`${h.orgId} slow-bad`]);
    expect(result.failed.get(`${h.orgId} slow-bad`)).toMatch(/check constraint/);
    const failed = (await h.failedEvents()).filter((row) => row.reason_code === 'db_rejected');
    expect(failed).toHaveLength(1);
    expect(failed[0]!.properties.payload_format).toBe('canonical');
  });

  it('stores one row for a key sent twice in one call, even with two different times', async () => {
    const result = await sqlEventWriter(h.test.db).write({
      events: [canonical('twice', { occurred_at: new Date(Date.now() - 7_200_000).toISOString() }), canonical('twice')],
      failures: [],
    });
    expect(result.inserted).toBe(1);
    const { rows } = await h.test.db.query('select 1 from events where event_id = $1', ['twice']);
    expect(rows).toHaveLength(1);
  });

  it('fails the whole write on a systemic error instead of filing every row as failed', async () => {
    const outcome = await h.test.db
      .transaction(async (tx) => {
        // service_role losing a privilege is not any row's fault
        await tx.query('revoke insert on public.event_ids from service_role');
        await tx.query('set local role service_role');
        await tx.query('select public.ingest_events($1::jsonb)', [JSON.stringify({ events: [canonical('sys-1')], failures: [] })]);
      })
      .then(() => 'committed', (error: { code?: string }) => error.code);
    expect(outcome).toBe('42501');
    const rows = await h.test.db.query(`select 1 from failed_events where payload like '%sys-1%'`);
    expect(rows.rows).toHaveLength(0);
  });

  it('lists and replays through the CLI, idempotently', async () => {
    // What the dead-letter consumer stores for events that never reached the database.
    const lost = ['dlq-1', 'dlq-2'].map((id) =>
      failureRecord({
        orgId: h.orgId,
        source: 'batch',
        rejection: { code: 'dead_letter', message: 'not written after 5 attempts' },
        payload: JSON.stringify(canonical(id)),
        payloadFormat: 'canonical',
        receivedAt: new Date(Date.now() - 3_500_000),
      }),
    );
    await sqlEventWriter(h.test.db).write({ events: [], failures: lost });
    // and one pixel hit that was refused for a bad value
    await h.app.request(`/v1/px?key=${h.publishableKey}&eid=px-bad&v=lots`);

    const listed = await cli('failed', 'list', '--org', h.orgId, '--json');
    expect(listed.code).toBe(0);
    const rows = JSON.parse(listed.out) as Array<{ reason_code: string }>;
    expect(rows.map((row) => row.reason_code).sort()).toEqual(['db_rejected', 'dead_letter', 'dead_letter', 'invalid_field']);

    const replay = await cli('failed', 'replay', '--org', h.orgId, '--json');
    // the still-invalid pixel and the db-refused row keep failing: exit 1, and say so
    expect(replay.code).toBe(1);
    expect(JSON.parse(replay.out)).toEqual({ replayed: 4, stored: 2, duplicates: 0, refused: 2 });
    expect(replay.err).toMatch(/replay \[#+\] 4\/4 100%/);
    const replayed = (await h.events()).filter((event) => event.event_id.startsWith('dlq-'));
    expect(replayed).toHaveLength(2);
    // it enters the log now, and remembers when it first arrived
    expect(Date.now() - replayed[0]!.received_at.getTime()).toBeLessThan(60_000);
    expect(replayed[0]!.context.first_received_at).toBeDefined();
    expect(replayed[0]!.context.replayed_from).toMatch(/^[0-9a-f-]{36}$/);

    // replayed rows drop out of the default list; --all replays them again: duplicates, not copies
    const pending = JSON.parse((await cli('failed', 'list', '--org', h.orgId, '--json')).out) as unknown[];
    expect(pending).toHaveLength(2);
    const again = await cli('failed', 'replay', '--org', h.orgId, '--all', '--json');
    expect(JSON.parse(again.out)).toMatchObject({ stored: 0, duplicates: 2, refused: 2 });
    expect((await h.events()).filter((event) => event.event_id.startsWith('dlq-'))).toHaveLength(2);
  });

  it('replays an id-less refused input under the id it was first given', async () => {
    // An id-less beacon event refused, then (say) the cause fixed on our side: replay twice.
    const { rows } = await h.test.db.query<{ id: string }>(
      `insert into failed_events (org_id, source, reason_code, reason, payload, properties)
       values ($1, 'beacon', 'unavailable', 'store down', $2, $3) returning id`,
      [h.orgId, JSON.stringify({ creative_id: 'replay-me' }), { payload_format: 'json', assigned_event_id: randomUUID(), context: { source: 'beacon' } }],
    );
    const { replayFailedEvents } = await import('../../core/ingest/replay.ts');
    expect(await replayFailedEvents(h.test.db, { ids: [rows[0]!.id] })).toMatchObject({ stored: 1 });
    expect(await replayFailedEvents(h.test.db, { ids: [rows[0]!.id], all: true })).toMatchObject({ duplicates: 1 });
    const stored = (await h.events()).filter((event) => event.creative_id === 'replay-me');
    expect(stored).toHaveLength(1);
    expect(stored[0]!.type).toBe('impression');
  });

  it('refuses bad CLI filters', async () => {
    const bad = await cli('failed', 'list', '--org', 'nope');
    expect(bad.code).toBe(2);
    expect(bad.err).toMatch(/org must be a UUID/);
    expect((await cli('failed', 'replay', '--limit', '0')).err).toMatch(/--limit must be a positive integer/);
  });

  describe('replays keep their source and their first id: replaying twice stores once', () => {
    // The newest failed row of a source, as the endpoint stored it.
    const lastFailed = async (source: string) => {
      const { rows } = await h.test.db.query<{ id: string; payload: string; properties: any; reason_code: string }>(
        `select id, payload, properties, reason_code from failed_events where org_id = $1 and source = $2
         order by received_at desc, id desc limit 1`,
        [h.orgId, source],
      );
      return rows[0]!;
    };
    // What an operator does after fixing the cause: here, the stored payload itself.
    const fixPayload = (id: string, from: string, to: string) =>
      h.test.db.query('update failed_events set payload = replace(payload, $2, $3) where id = $1', [id, from, to]);
    const replayTwice = async (id: string) => {
      const first = await replayFailedEvents(h.test.db, { ids: [id] });
      const second = await replayFailedEvents(h.test.db, { ids: [id], all: true });
      return [first, second];
    };
    const withProperty = async (name: string, value: string) =>
      (await h.events()).filter((event) => event.properties[name] === value);

    it('a pixel as a pixel, under the id assigned when it was refused', async () => {
      const response = await h.app.request(`/v1/px?key=${h.publishableKey}&ev=click&v=lots&p.case=px-replay`);
      expect(response.status).toBe(400);
      const row = await lastFailed('pixel');
      expect(row.properties).toMatchObject({ payload_format: 'query', assigned_event_id: expect.any(String) });
      await fixPayload(row.id, 'v=lots', 'v=5');
      expect(await replayTwice(row.id)).toEqual([
        { replayed: 1, stored: 1, duplicates: 0, refused: 0 },
        { replayed: 1, stored: 0, duplicates: 1, refused: 0 },
      ]);
      const stored = await withProperty('case', 'px-replay');
      expect(stored.map((event) => [event.event_id, event.type, event.value])).toEqual([[row.properties.assigned_event_id, 'click', '5']]);
      expect(stored[0]!.context.source).toBe('pixel');
    });

    it('beacon and batch events as JSON events; a batch event keeps its user context enriched, never the raw IP', async () => {
      const beacon = await h.app.request(`/v1/px?key=${h.publishableKey}`, {
        method: 'POST',
        body: JSON.stringify({ value: 'lots', properties: { case: 'beacon-replay' } }),
      });
      expect(beacon.status).toBe(400);
      const beaconRow = await lastFailed('beacon');
      await fixPayload(beaconRow.id, '"lots"', '7');

      const batch = await h.app.request('/v1/events', {
        method: 'POST',
        headers: { authorization: `Bearer ${h.ingestKey}`, 'content-type': 'application/json' },
        body: JSON.stringify({
          events: [{ type: 'purchase', value: 'lots', properties: { case: 'batch-replay' }, context: { ip: '203.0.113.77', country: 'de' } }],
        }),
      });
      expect(batch.status).toBeLessThan(500);
      const batchRow = await lastFailed('batch');
      expect(batchRow.payload).not.toContain('203.0.113.77');
      expect(JSON.stringify(batchRow.properties)).not.toContain('203.0.113.77');
      await fixPayload(batchRow.id, '"lots"', '9');

      for (const row of [beaconRow, batchRow]) {
        expect((await replayTwice(row.id)).map((summary) => [summary.stored, summary.duplicates])).toEqual([[1, 0], [0, 1]]);
      }
      const beaconEvents = await withProperty('case', 'beacon-replay');
      expect(beaconEvents.map((event) => [event.event_id, event.type, event.value])).toEqual([[beaconRow.properties.assigned_event_id, 'impression', '7']]);
      const batchEvents = await withProperty('case', 'batch-replay');
      expect(batchEvents.map((event) => [event.event_id, event.type])).toEqual([[batchRow.properties.assigned_event_id, 'purchase']]);
      expect(batchEvents[0]!.context).toMatchObject({ source: 'batch', geo: { country: 'DE' }, ip: { truncated: '203.0.113.0' } });
      expect(batchEvents[0]!.whole).not.toContain('203.0.113.77');
    });

    it('a click as a click, with its click id', async () => {
      const url = encodeURIComponent('https://shop.example.com/');
      const { rows: campaigns } = await h.test.db.query<{ id: string }>(
        `insert into campaigns (org_id, name, properties) values ($1, 'Clicks', '{"click_allow_list": ["shop.example.com"]}') returning id`,
        [h.orgId],
      );
      const response = await h.app.request(`/v1/click?key=${h.publishableKey}&cmp=${campaigns[0]!.id}&url=${url}&v=lots&p.case=click-replay`);
      expect(response.status).toBe(400);
      const row = await lastFailed('click');
      await fixPayload(row.id, '"lots"', '2');
      expect((await replayTwice(row.id)).map((summary) => [summary.stored, summary.duplicates])).toEqual([[1, 0], [0, 1]]);
      const stored = await withProperty('case', 'click-replay');
      expect(stored).toHaveLength(1);
      expect(stored[0]).toMatchObject({ type: 'click', click_id: JSON.parse(row.payload).click_id, campaign_id: campaigns[0]!.id });
    });

    it('a postback as a postback: refused again unchanged, stored once after its token is fixed', async () => {
      const token = await createApiKey(h.test.db, { orgId: h.orgId, kind: 'postback', properties: { status_map: { sale: 'approved' } } });
      const macro = await h.app.request(`/v1/postback/${token.key}?clickid={clickid}&tid=pb-replay-0`);
      expect(macro.status).toBe(400);
      const macroRow = await lastFailed('postback');
      expect(macroRow.properties).toMatchObject({ key_id: token.id, payload_format: 'query' });
      // unchanged, it stays refused for its reason: not an impression, not stored at all
      const still = await replayFailedEvents(h.test.db, { ids: [macroRow.id] });
      expect(still).toEqual({ replayed: 1, stored: 0, duplicates: 0, refused: 1 });
      const { rows: results } = await h.test.db.query<{ replay_result: any }>('select replay_result from failed_events where id = $1', [macroRow.id]);
      expect(results[0]!.replay_result).toMatchObject({ ok: false, code: 'unreplaced_macro', field: 'clickid' });
      expect(await withProperty('txid', 'pb-replay-0')).toHaveLength(0);
      expect((await h.events()).filter((event) => event.context.replayed_from === macroRow.id)).toHaveLength(0);

      // the network names its click "aff_click" and its status word "lead": refused until the token maps them
      const unmapped = await h.app.request(`/v1/postback/${token.key}?aff_click=clk-replay-1&amt=4.5&tid=pb-replay-1&state=lead&ip=198.51.100.23`, {
        headers: { 'x-forwarded-for': '192.0.2.1', 'user-agent': 'NetworkServer/1.0' },
      });
      expect(unmapped.status).toBe(400);
      const row = await lastFailed('postback');
      expect(row.reason_code).toBe('missing_field');
      expect(row.payload).not.toContain('198.51.100.23');
      expect(row.properties.context).toMatchObject({ source: 'postback', ip: { truncated: '198.51.100.0' } });
      await h.test.db.query(`update api_keys set properties = $2 where id = $1`, [
        token.id,
        { param_map: { aff_click: 'click_id', amt: 'value', state: 'status' }, status_map: { lead: 'pending' } },
      ]);
      const [first, second] = await replayTwice(row.id);
      expect(first).toEqual({ replayed: 1, stored: 1, duplicates: 0, refused: 0 });
      expect(second).toEqual({ replayed: 1, stored: 0, duplicates: 1, refused: 0 });
      const stored = await withProperty('txid', 'pb-replay-1');
      expect(stored.map((event) => [event.type, event.click_id, event.value, event.status])).toEqual([['conversion', 'clk-replay-1', '4.5', 'pending']]);
      expect(stored[0]!.event_id).toMatch(/^pb_[0-9a-f]{40}$/);
      expect(stored[0]!.context).toMatchObject({ source: 'postback', unmatched_click: true, ip: { truncated: '198.51.100.0' }, replayed_from: row.id });
      // the network's own retry now is the same conversion: one event still (fresh caches: they
      // expire within a minute)
      h.services.keys = new KeyCache(sqlKeyStore(h.test.db));
      const retry = await h.app.request(`/v1/postback/${token.key}?aff_click=clk-replay-1&amt=4.5&tid=pb-replay-1&state=lead`);
      expect(await retry.json()).toMatchObject({ event_id: stored[0]!.event_id, duplicate: true });
      expect(await withProperty('txid', 'pb-replay-1')).toHaveLength(1);
    });

    it('a webhook item through its integration’s mapping; a body with no events once events_path is fixed', async () => {
      const mapping = { events_path: 'rows', fields: { type: 'kind', value: 'amount', currency: '$root.cur', 'properties.case': { const: 'wh-replay' }, 'context.ip': 'ip' } };
      const integration = await createIntegration(h.test.db, { orgId: h.orgId, name: 'Replay DSP', mapping });
      const deliver = (body: unknown, t = Math.floor(Date.now() / 1000)) => {
        const text = JSON.stringify(body);
        return h.app.request(`/v1/webhooks/${integration.id}`, {
          method: 'POST',
          headers: { 'x-precise-signature': signWebhook(webhookSecret(SERVER_SECRET, integration.id), t, text) },
          body: text,
        });
      };
      // the DSP says "event_kind", the mapping reads "kind": refused (no type), kept without the user's IP
      const body = { cur: 'EUR', rows: [{ event_kind: 'win', amount: 1.5, ip: '203.0.113.9', sent_at: 1 }] };
      expect(await (await deliver(body)).json()).toMatchObject({ accepted: 0, rejected: [{ index: 0, code: 'missing_field', field: 'type' }] });
      const row = await lastFailed('webhook');
      expect(row.properties).toMatchObject({ integration_id: integration.id, webhook_root: { cur: 'EUR' }, context: { ip: { truncated: '203.0.113.0' } } });
      expect(row.payload).not.toContain('203.0.113.9');
      await h.test.db.query(`update integrations set properties = jsonb_set(properties, '{mapping,fields,type}', '"event_kind"') where id = $1`, [integration.id]);
      expect((await replayTwice(row.id)).map((summary) => [summary.stored, summary.duplicates])).toEqual([[1, 0], [0, 1]]);
      const stored = await withProperty('case', 'wh-replay');
      expect(stored.map((event) => [event.type, event.value, event.currency])).toEqual([['win', '1.5', 'EUR']]);
      expect(stored[0]!.event_id).toMatch(/^wh_[0-9a-f]{40}$/);
      expect(stored[0]!.context).toMatchObject({ source: 'webhook', ip: { truncated: '203.0.113.0' } });
      // the DSP resends the item (another delivery, another send time): the same event
      h.services.webhooks = new Webhooks(sqlWebhookStore(h.test.db));
      const resent = { cur: 'EUR', rows: [{ sent_at: 2, ip: '203.0.113.9', amount: 1.5, event_kind: 'win' }] };
      expect(await (await deliver(resent, Math.floor(Date.now() / 1000) - 5)).json()).toMatchObject({ accepted: 0, duplicates: 1 });

      // events_path wrong: a 400 naming it, and the body kept
      const misplaced = { cur: 'EUR', data: [{ event_kind: 'win', amount: 2.5 }] };
      const response = await deliver(misplaced);
      expect(response.status).toBe(400);
      expect(((await response.json()) as any).error.details).toMatchObject({ field: 'events_path', reason: 'no_events', events_path: 'rows' });
      const bodyRow = await lastFailed('webhook');
      expect(bodyRow).toMatchObject({ reason_code: 'no_events', properties: { integration_id: integration.id, webhook_body: true } });
      expect(await replayFailedEvents(h.test.db, { ids: [bodyRow.id] })).toMatchObject({ refused: 1 });
      await h.test.db.query(`update integrations set properties = jsonb_set(properties, '{mapping,events_path}', '"data"') where id = $1`, [integration.id]);
      const cli = await runCli({ DATABASE_URL: await h.test.connectionUrl(), PRECISE_DATA_DIR: '/nonexistent' }, 'failed', 'replay', '--all', bodyRow.id, '--json');
      expect(JSON.parse(cli.out)).toEqual({ replayed: 1, stored: 1, duplicates: 0, refused: 0 });
      expect(await replayFailedEvents(h.test.db, { ids: [bodyRow.id], all: true })).toMatchObject({ stored: 0, duplicates: 1 });
      expect((await withProperty('case', 'wh-replay')).map((event) => event.value).sort()).toEqual(['1.5', '2.5']);
    });
  });
});
