import { env, exports } from 'cloudflare:workers';
import { describe, expect, it } from 'vitest';
import { openPostgresJs } from '../../core/db/postgres-js.ts';
import { signWebhook, webhookSecret } from '../../core/webhooks/delivery.ts';

// Postbacks and signed webhooks through the Worker in workerd, written through Hyperdrive in
// the request (they need the log: status rules, replay claims).
const db = openPostgresJs({ connectionString: env.TEST_DATABASE_URL, max: 2 });
const request = (path: string, init: RequestInit = {}) => exports.default.fetch(`https://edge.test${path}`, init);

describe('postbacks and webhooks in workerd', () => {
  it('takes the end user context from postback parameters, not from the calling network', async () => {
    const url = `/v1/postback/${env.TEST_POSTBACK_TOKEN}?clickid=wk-click-ctx&tid=wk-order-ctx&user_ip=203.0.113.88&country=nl&status=constructor`;
    // a status word that is no status_map entry is a 400, never a 500
    expect((await request(url, { headers: { 'user-agent': 'curl/8.0' } })).status).toBe(400);
    const ok = await request(url.replace('&status=constructor', ''), { headers: { 'user-agent': 'curl/8.0' } });
    expect(ok.status).toBe(200);
    const { rows } = await db.query<{ context: any }>(`select context from events where org_id = $1 and click_id = 'wk-click-ctx'`, [env.TEST_ORG_ID]);
    expect(rows[0]!.context).toMatchObject({ source: 'postback', geo: { country: 'NL' }, ip: { truncated: '203.0.113.0' } });
    expect(JSON.stringify(rows[0]!.context)).not.toMatch(/203\.0\.113\.88|curl/);
  });

  it('records a postback once, refuses macros and bad transitions', async () => {
    const url = `/v1/postback/${env.TEST_POSTBACK_TOKEN}?clickid=wk-click-1&payout=3.5&tid=wk-order-1`;
    const first = (await (await request(url)).json()) as any;
    expect(first).toMatchObject({ duplicate: false, status: 'approved', unmatched_click: true });
    expect(((await (await request(url)).json()) as any).duplicate).toBe(true);
    const macro = await request(`/v1/postback/${env.TEST_POSTBACK_TOKEN}?clickid={clickid}`);
    expect(macro.status).toBe(400);
    expect(((await macro.json()) as any).error.details).toMatchObject({ field: 'clickid', reason: 'unreplaced_macro' });
    const back = await request(`/v1/postback/${env.TEST_POSTBACK_TOKEN}?clickid=wk-click-1&tid=wk-order-1&status=pending`);
    expect(back.status).toBe(409);
    const { rows } = await db.query<{ n: number }>(`select count(*)::int as n from events where org_id = $1 and click_id = 'wk-click-1'`, [env.TEST_ORG_ID]);
    expect(rows[0]!.n).toBe(1);
  });

  it('verifies, maps and stores a signed delivery; refuses bad signatures and replays', async () => {
    const payload = JSON.stringify({ events: [{ event_id: 'wk-wh-1', type: 'impression' }, { event_id: 'wk-wh-2', type: 'Bad' }] });
    const signature = signWebhook(webhookSecret(env.PRECISE_SECRET!, env.TEST_INTEGRATION_ID), Math.floor(Date.now() / 1000), payload);
    const post = (sig: string) => request(`/v1/webhooks/${env.TEST_INTEGRATION_ID}`, { method: 'POST', headers: { 'x-precise-signature': sig }, body: payload });
    const accepted = await post(signature);
    expect(accepted.status).toBe(200);
    expect(await accepted.json()).toMatchObject({ accepted: 1, duplicates: 0, rejected: [{ index: 1, field: 'type' }] });
    expect((await post(signature)).status).toBe(409);
    // the same delivery however its header is written: the key is what was verified
    const [t, v1] = signature.split(',');
    for (const variant of [`${t}, ${v1}`, `${v1},${t}`, `${signature},`, `${signature},v0=00`, `${t},${v1!.toUpperCase().replace('V1=', 'v1=')}`]) {
      expect({ variant, status: (await post(variant)).status }).toEqual({ variant, status: 409 });
    }
    // one hex digit changed (never to itself)
    const forged = await post(signature.replace(/v1=(.)/, (_, digit: string) => `v1=${digit === '0' ? '1' : '0'}`));
    expect(forged.status).toBe(401);
    const { rows } = await db.query<{ n: number }>(`select count(*)::int as n from events where org_id = $1 and event_id = 'wk-wh-1'`, [env.TEST_ORG_ID]);
    expect(rows[0]!.n).toBe(1);
  });
});

describe('cron triggers in workerd', () => {
  it('rolls up what arrived when the minute trigger fires', async () => {
    const { createExecutionContext, createScheduledController, waitOnExecutionContext } = await import('cloudflare:test');
    const { default: worker } = await import('../../worker.ts');
    const batch = await request('/v1/events', {
      method: 'POST',
      headers: { authorization: `Bearer ${env.TEST_INGEST_KEY}` },
      body: JSON.stringify({ events: [{ event_id: 'wk-cron-1', type: 'impression', occurred_at: '2026-11-01T10:05:00Z' }] }),
    });
    expect(batch.status).toBe(202);
    // the batch went through the queue: wait until the consumer has written it
    await expect.poll(async () => (await db.query(`select 1 from events where event_id = 'wk-cron-1'`)).rows.length, { timeout: 15_000 }).toBe(1);
    const ctx = createExecutionContext();
    await worker.scheduled(createScheduledController({ cron: '* * * * *', scheduledTime: Date.now() }), env, ctx);
    await waitOnExecutionContext(ctx);
    const { rows } = await db.query<{ value: string }>(
      `select value::text from metrics where org_id = $1 and metric = 'impressions' and entity_type = 'organization'
       and bucket_start = '2026-11-01T10:00:00Z'`,
      [env.TEST_ORG_ID],
    );
    expect(rows).toEqual([{ value: '1' }]);
  });
});
