import { env, exports } from 'cloudflare:workers';
import { describe, expect, it } from 'vitest';
import { openPostgresJs } from '../../core/db/postgres-js.ts';
import { signWebhook, webhookSecret } from '../../core/webhooks/delivery.ts';

// Every refusal of the click, postback and webhook endpoints, through the Worker in workerd:
// the same answers as on Node, and nothing stored for any of them.
const db = openPostgresJs({ connectionString: env.TEST_DATABASE_URL, max: 2 });
const request = (path: string, init: RequestInit = {}) => exports.default.fetch(`https://edge.test${path}`, { redirect: 'manual', ...init });
const countEvents = async () => (await db.query<{ n: number }>('select count(*)::int as n from events where org_id = $1', [env.TEST_ORG_ID])).rows[0]!.n;

describe('refusals in workerd', () => {
  it('click: no redirect where it was not told to', async () => {
    const before = await countEvents();
    const cases: Array<[Record<string, string>, number, string]> = [
      [{ url: 'https://evil.example/' }, 400, 'url'],
      [{ url: 'javascript:alert(1)' }, 400, 'url'],
      [{ url: 'data:text/html,hi' }, 400, 'url'],
      [{ url: 'https://a.example/\r\nx: y' }, 400, 'url'],
      [{ url: 'https://a.example/%0d%0ax:%20y' }, 400, 'url'],
      [{ url: 'https://user:pw@a.example/' }, 400, 'url'],
      [{ url: '/relative' }, 400, 'url'],
      [{}, 400, 'url'],
      [{ url: 'https://evil.example/', sig: '00'.repeat(32) }, 400, 'sig'],
    ];
    for (const [params, status, field] of cases) {
      const response = await request(`/v1/click?${new URLSearchParams({ key: env.TEST_PUBLISHABLE_KEY, ...params })}`);
      const body = (await response.json()) as { error: { details: { field: string } } };
      expect({ params, status: response.status, field: body.error.details.field, location: response.headers.get('location') }).toEqual({ params, status, field, location: null });
    }
    expect((await request(`/v1/click?url=${encodeURIComponent('https://a.example/')}`)).status).toBe(401);
    expect(await countEvents()).toBe(before);
  });

  it('postback: macros, bad values, statuses, currencies and tokens', async () => {
    const before = await countEvents();
    const base = `/v1/postback/${env.TEST_POSTBACK_TOKEN}`;
    const cases: Array<[string, number, string]> = [
      ['clickid={clickid}', 400, 'clickid'],
      ['clickid=c&ts=(click-ts)', 400, 'ts'],
      ['subid=[CLICK_ID]', 400, 'subid'],
      ['clickid=c&payout=%25%25P%25%25', 400, 'payout'],
      ['clickid=c&payout=1,5', 400, 'value'],
      ['clickid=c&status=paid', 400, 'status'],
      ['clickid=c&payout=1&currency=DOLLAR', 400, 'currency'],
      ['payout=1', 400, 'click_id'],
    ];
    for (const [query, status, field] of cases) {
      const response = await request(`${base}?${query}`);
      expect({ query, status: response.status, field: ((await response.json()) as any).error.details.field }).toEqual({ query, status, field });
    }
    expect((await request(`/v1/postback/pb_${'0'.repeat(32)}?clickid=c`)).status).toBe(401);
    expect((await request(`/v1/postback/${env.TEST_PUBLISHABLE_KEY}?clickid=c`)).status).toBe(403);
    expect(await countEvents()).toBe(before);
  });

  it('webhook: one 401 for every signature failure', async () => {
    const payload = JSON.stringify({ events: [{ type: 'click' }] });
    const secret = webhookSecret(env.PRECISE_SECRET!, env.TEST_INTEGRATION_ID);
    const now = Math.floor(Date.now() / 1000);
    const post = (id: string, signature?: string) =>
      request(`/v1/webhooks/${id}`, { method: 'POST', headers: signature ? { 'x-precise-signature': signature } : {}, body: payload });
    const answers = [
      await post(env.TEST_INTEGRATION_ID),
      await post(env.TEST_INTEGRATION_ID, 'nonsense'),
      await post(env.TEST_INTEGRATION_ID, signWebhook(secret, now - 400, payload)),
      await post(env.TEST_INTEGRATION_ID, signWebhook('whsec_other', now, payload)),
      await post('00000000-0000-4000-8000-000000000000', signWebhook(secret, now, payload)),
    ];
    for (const response of answers) {
      expect([response.status, ((await response.json()) as any).error.message]).toEqual([401, 'signature verification failed']);
    }
  });
});
