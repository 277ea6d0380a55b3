import { createExecutionContext, createMessageBatch, getQueueResult } from 'cloudflare:test';
import { canonicalEvent } from '../helpers/events.ts';
import { signClick } from '../../core/click.ts';
import { deriveSecret } from '../../core/secrets.ts';
import { env, exports } from 'cloudflare:workers';
import { describe, expect, it } from 'vitest';
import { openPostgresJs } from '../../core/db/postgres-js.ts';
import type { CanonicalEvent } from '../../core/events/canonical.ts';
import worker from '../../worker.ts';
import type { QueueMessage } from '../../functions/sinks/queue.ts';
import { retryDelaySeconds } from '../../functions/queue-consumer.ts';

// The Worker inside workerd (Miniflare): HTTP in, the Cloudflare Queue, the consumer, and
// Postgres (PGlite on a socket, or a real Postgres) through the Hyperdrive binding.
// Not closed at the end: the runtime closes the socket with the test isolate (see functions/edge.ts).
const db = openPostgresJs({ connectionString: env.TEST_DATABASE_URL, max: 2 });

const CHROME = 'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36';
const request = (path: string, init: RequestInit = {}) => exports.default.fetch(`https://edge.test${path}`, init);

async function eventRow(eventId: string, timeoutMs = 15_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const { rows } = await db.query<{ type: string; user_key: string | null; context: any; whole: string }>(
      'select type, user_key, context, row_to_json(e)::text as whole from events e where org_id = $1 and event_id = $2',
      [env.TEST_ORG_ID, eventId],
    );
    if (rows[0] || Date.now() > deadline) return rows[0];
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

const countOf = async (eventId: string) =>
  (await db.query<{ n: number }>('select count(*)::int as n from events where org_id = $1 and event_id = $2', [env.TEST_ORG_ID, eventId]))
    .rows[0]!.n;

describe('the Worker in workerd', () => {
  it('takes a pixel, queues it, and the consumer stores it with edge enrichment', async () => {
    const response = await request(`/v1/px?key=${env.TEST_PUBLISHABLE_KEY}&eid=wk-px-1&uid=u-1&p.slot=top`, {
      headers: { 'user-agent': CHROME, 'cf-connecting-ip': '198.51.100.99' },
    });
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toBe('image/gif');
    expect((await response.arrayBuffer()).byteLength).toBe(43);
    const row = await eventRow('wk-px-1');
    expect(row).toMatchObject({ type: 'impression', user_key: 'u-1' });
    expect(row!.context).toMatchObject({ source: 'pixel', bot: false, device: { type: 'desktop', browser: 'Chrome' }, ip: { truncated: '198.51.100.0' } });
    expect(row!.whole).not.toContain('198.51.100.99');
  });

  it('takes geo from request.cf', async () => {
    const response = await request(`/v1/px?key=${env.TEST_PUBLISHABLE_KEY}&eid=wk-geo`, {
      headers: { 'user-agent': CHROME },
      cf: { country: 'NP', region: 'Bagmati Province', city: 'Kathmandu', colo: 'KTM', asn: 17501 },
    } as RequestInit);
    expect(response.status).toBe(200);
    expect((await eventRow('wk-geo'))!.context.geo).toEqual({ country: 'NP', region: 'Bagmati Province', city: 'Kathmandu', colo: 'KTM', asn: 17501 });
  });

  it('flags a bot and honours GPC and anonymous mode', async () => {
    await request(`/v1/px?key=${env.TEST_PUBLISHABLE_KEY}&eid=wk-bot`, { headers: { 'user-agent': 'curl/8.5.0', 'cf-connecting-ip': '203.0.113.5' } });
    await request(`/v1/px?key=${env.TEST_PUBLISHABLE_KEY}&eid=wk-gpc&uid=u-2`, { headers: { 'sec-gpc': '1', 'cf-connecting-ip': '203.0.113.6' } });
    await request(`/v1/px?key=${env.TEST_PUBLISHABLE_KEY}&eid=wk-anon&uid=u-3`, { headers: { 'x-precise-anonymous': '1', 'cf-connecting-ip': '203.0.113.7' } });
    expect((await eventRow('wk-bot'))!.context).toMatchObject({ bot: true });
    const gpc = await eventRow('wk-gpc');
    expect(gpc!.user_key).toBeNull();
    expect(gpc!.context.ip).toBeUndefined();
    const anon = await eventRow('wk-anon');
    expect(anon!.user_key).toBeNull();
    expect(anon!.whole).not.toContain('203.0.113.7');
  });

  it('takes a beacon and a batch with partial rejection', async () => {
    const beacon = await request(`/v1/px?key=${env.TEST_PUBLISHABLE_KEY}`, {
      method: 'POST',
      headers: { 'content-type': 'text/plain' },
      body: JSON.stringify([{ event_id: 'wk-beacon-1' }, { event_id: 'wk-beacon-2', type: 'creative_view' }]),
    });
    expect(beacon.status).toBe(204);
    const batch = await request('/v1/events', {
      method: 'POST',
      headers: { authorization: `Bearer ${env.TEST_INGEST_KEY}` },
      body: JSON.stringify({ events: [{ event_id: 'wk-b-1', type: 'click' }, { event_id: 'wk-b-2', type: 'click', value: 'x' }, { event_id: 'wk-b-3', type: 'conversion', value: 12.5, currency: 'GBP' }] }),
    });
    expect(batch.status).toBe(202);
    expect(await batch.json()).toMatchObject({ accepted: 2, duplicates: 0, rejected: [{ index: 1, code: 'invalid_field', field: 'value' }] });
    for (const id of ['wk-beacon-1', 'wk-beacon-2', 'wk-b-1', 'wk-b-3']) expect(await eventRow(id)).toBeDefined();
    expect(await eventRow('wk-b-2', 500)).toBeUndefined();
    const failed = await db.query<{ reason_code: string }>(
      `select reason_code from failed_events where org_id = $1 and payload like '%wk-b-2%'`,
      [env.TEST_ORG_ID],
    );
    await expect.poll(async () => (await db.query(`select 1 from failed_events where org_id = $1 and payload like '%wk-b-2%'`, [env.TEST_ORG_ID])).rows.length, { timeout: 15_000 }).toBe(1);
    expect(failed.rows.every((row) => row.reason_code === 'invalid_field')).toBe(true);
  });

  it('redirects a signed click after queueing it, and refuses an unsigned one', async () => {
    const { rows } = await db.query<{ id: string }>(`select id from api_keys where org_id = $1 and kind = 'publishable'`, [env.TEST_ORG_ID]);
    const url = 'https://landing.example.net/?c={click_id}';
    const sig = signClick(deriveSecret(env.PRECISE_SECRET!, 'click-signing', rows[0]!.id), url);
    const response = await request(`/v1/click?${new URLSearchParams({ key: env.TEST_PUBLISHABLE_KEY, url, sig })}`, { redirect: 'manual' });
    expect(response.status).toBe(302);
    const clickId = new URL(response.headers.get('location')!).searchParams.get('c')!;
    await expect
      .poll(async () => (await db.query('select 1 from events where org_id = $1 and click_id = $2', [env.TEST_ORG_ID, clickId])).rows.length, { timeout: 15_000 })
      .toBe(1);
    const unsigned = await request(`/v1/click?${new URLSearchParams({ key: env.TEST_PUBLISHABLE_KEY, url: 'https://evil.example/' })}`, { redirect: 'manual' });
    expect(unsigned.status).toBe(400);
    expect(unsigned.headers.get('location')).toBeNull();
  });

  it('refuses bad keys and oversize bodies', async () => {
    expect((await request(`/v1/px?key=pk_${'a'.repeat(32)}`)).status).toBe(401);
    const noAuth = await request('/v1/events', { method: 'POST', body: '{"events":[{"type":"click"}]}' });
    expect(noAuth.status).toBe(401);
    expect(((await noAuth.json()) as any).error.code).toBe('unauthorized');
    const big = await request('/v1/events', {
      method: 'POST',
      headers: { authorization: `Bearer ${env.TEST_INGEST_KEY}` },
      body: JSON.stringify({ events: [{ type: 'click', properties: { blob: 'x'.repeat(1024 * 1024) } }] }),
    });
    expect(big.status).toBe(413);
  });

  const canonical = (id: string) => canonicalEvent(env.TEST_ORG_ID, id, { creative_id: 'crv-q', context: { source: 'pixel' } });
  const delivery = (queue: string, events: CanonicalEvent[][], attempts = 1) =>
    createMessageBatch<QueueMessage>(
      queue,
      events.map((group, i) => ({ id: `msg-${queue}-${i}`, timestamp: new Date(), attempts, body: { v: 1, batch: { events: group, failures: [] } } })),
    );

  it('consumes a delivery in one write, and a redelivery counts once', async () => {
    const ids = [['wk-q-1', 'wk-q-2'], ['wk-q-3']];
    // a redelivery carries the very same message bodies
    const events = ids.map((group) => group.map(canonical));
    for (let round = 0; round < 2; round += 1) {
      const batch = delivery('precise-events', events, round + 1);
      const ctx = createExecutionContext();
      await worker.queue(batch, env);
      const result = await getQueueResult(batch, ctx);
      expect(result.ackAll).toBe(true);
      expect(result.retryMessages).toEqual([]);
    }
    for (const id of ids.flat()) expect(await countOf(id)).toBe(1);
  });

  it('retries every message, acknowledging none, when the database is down', async () => {
    const down = { ...env, HYPERDRIVE: undefined, DATABASE_URL: 'postgres://postgres:pw@127.0.0.1:1/nowhere' };
    const batch = delivery('precise-events', [[canonical('wk-down-1')], [canonical('wk-down-2')]], 3);
    const ctx = createExecutionContext();
    await worker.queue(batch, down);
    const result = await getQueueResult(batch, ctx);
    expect(result.ackAll).toBe(false);
    expect(result.explicitAcks).toEqual([]);
    expect(result.retryMessages.map((m) => m.msgId)).toEqual(['msg-precise-events-0', 'msg-precise-events-1']);
    expect(await countOf('wk-down-1')).toBe(0);
    // the delay the consumer asks for grows with the attempts
    expect([1, 2, 4, 12].map(retryDelaySeconds)).toEqual([2, 4, 16, 300]);
  });

  it('keeps dead letters in failed_events, replayable', async () => {
    const batch = delivery('precise-events-dlq', [[canonical('wk-dead-1'), canonical('wk-dead-2')]], 9);
    const ctx = createExecutionContext();
    await worker.queue(batch, env);
    expect((await getQueueResult(batch, ctx)).ackAll).toBe(true);
    const { rows } = await db.query<{ reason_code: string; properties: any; reason: string }>(
      `select reason_code, reason, properties from failed_events where org_id = $1 and payload like '%wk-dead-%' order by payload`,
      [env.TEST_ORG_ID],
    );
    expect(rows.map((row) => row.reason_code)).toEqual(['dead_letter', 'dead_letter']);
    expect(rows[0]!.reason).toMatch(/9 attempts/);
    expect(rows[0]!.properties.payload_format).toBe('canonical');
  });
});
