import { createExecutionContext, createMessageBatch, getQueueResult } from 'cloudflare:test';
import { env, exports } from 'cloudflare:workers';
import { describe, expect, it } from 'vitest';
import { openPostgresJs } from '../../core/db/postgres-js.ts';
import worker from '../../worker.ts';
import type { QueueMessage } from '../../functions/sinks/queue.ts';
import { canonicalEvent } from '../helpers/events.ts';

// In workerd: a server-side sender is never the user (not its agent, IP or request.cf geo), the
// end user's own context is enriched as a pixel's request, and a queue delivery with a row
// Postgres refuses is acknowledged whole, the rest stored and the row kept as a failed event.
const db = openPostgresJs({ connectionString: env.TEST_DATABASE_URL, max: 2 });
const CHROME = 'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36';

async function eventRow(eventId: string, timeoutMs = 15_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const { rows } = await db.query<{ context: any; whole: string }>(
      'select context, row_to_json(e)::text as whole from events e where org_id = $1 and event_id = $2',
      [env.TEST_ORG_ID, eventId],
    );
    if (rows[0] || Date.now() > deadline) return rows[0];
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

describe('counted right, in workerd', () => {
  it("takes a server's batch as its users' events, enriching each from its own context", async () => {
    const response = await exports.default.fetch('https://edge.test/v1/events', {
      method: 'POST',
      headers: { authorization: `Bearer ${env.TEST_INGEST_KEY}`, 'user-agent': 'python-requests/2.32.3', 'cf-connecting-ip': '192.0.2.10' },
      body: JSON.stringify({
        events: [
          { event_id: 'wk-srv-plain', type: 'impression' },
          { event_id: 'wk-srv-user', type: 'impression', context: { user_agent: CHROME, ip: '203.0.113.77', country: 'DE' } },
        ],
      }),
      cf: { country: 'US', city: 'Ashburn', asn: 14618 },
    } as RequestInit);
    expect(response.status).toBe(202);
    const plain = await eventRow('wk-srv-plain');
    expect(plain!.context).not.toHaveProperty('device');
    expect(plain!.context).not.toHaveProperty('geo');
    expect(plain!.context).not.toHaveProperty('ip');
    expect(plain!.context.bot ?? false).toBe(false);
    const user = await eventRow('wk-srv-user');
    expect(user!.context).toMatchObject({ bot: false, device: { browser: 'Chrome' }, geo: { country: 'DE' }, ip: { truncated: '203.0.113.0' } });
    expect(user!.whole).not.toContain('203.0.113.77');
    expect(user!.whole).not.toContain('Ashburn');
  });

  it('acknowledges a delivery holding a row Postgres refuses, stores the rest and keeps the row as a failed event', async () => {
    const good = canonicalEvent(env.TEST_ORG_ID, 'wk-poison-ok', { context: { source: 'pixel' } });
    const bad = canonicalEvent(env.TEST_ORG_ID, 'wk-poison-bad', { user_key: 'nul\u0000', context: { source: 'pixel' } });
    const batch = createMessageBatch<QueueMessage>('precise-events', [
      { id: 'msg-poison-1', timestamp: new Date(), attempts: 1, body: { v: 1, batch: { events: [good], failures: [] } } },
      { id: 'msg-poison-2', timestamp: new Date(), attempts: 1, body: { v: 1, batch: { events: [bad], failures: [] } } },
    ]);
    const ctx = createExecutionContext();
    await worker.queue(batch, env);
    const result = await getQueueResult(batch, ctx);
    expect(result.ackAll).toBe(true);
    expect(result.retryMessages).toEqual([]);
    expect(await eventRow('wk-poison-ok')).toBeDefined();
    const { rows } = await db.query<{ n: number }>(
      `select count(*)::int as n from failed_events where org_id = $1 and reason_code = 'db_rejected' and payload like '%wk-poison-bad%'`,
      [env.TEST_ORG_ID],
    );
    expect(rows[0]!.n).toBe(1);
  });
});
