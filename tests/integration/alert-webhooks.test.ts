import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Webhook, WebhookVerificationError } from 'standardwebhooks';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { createApiKey, createCampaign, createOrganization, removeAlertWebhook, setAlertWebhook } from '../../core/admin.ts';
import { supabaseAlertLogReader } from '../../core/alerts/log.ts';
import { alertSecretHash, parseAlertSettings, parseWebhookUrl } from '../../core/alerts/settings.ts';
import { KeyCache, supabaseKeyStore } from '../../core/auth.ts';
import { supabaseServiceClient } from '../../core/db/supabase-client.ts';
import { createApp } from '../../functions/app.ts';
import type { Services } from '../../functions/env.ts';
import { postWebhook } from '../../core/alerts/transport.ts';
import type { Database } from '../../core/db/port.ts';
import { PreciseError } from '../../core/errors.ts';
import { alertWebhooksJob, MAX_ATTEMPTS, RETRY_DELAYS_MS, runAlertWebhooks, type AlertWebhooksInput } from '../../scheduled/jobs/alert-webhooks.ts';
import { runCreativeFatigue } from '../../scheduled/jobs/creative-fatigue.ts';
import { runRollup } from '../../scheduled/jobs/rollup.ts';
import { jobDefaults } from '../../cli/stack.ts';
import { parseNodeConfig } from '../../core/config.ts';
import { startScheduler } from '../../scheduled/scheduler.ts';
import { createCliSandbox, type CliSandbox } from '../helpers/cli.ts';
import { asUser, attempt, BACKEND } from '../helpers/database.ts';
import { createIngestHarness, SERVER_SECRET, type IngestHarness } from '../helpers/ingest.ts';
import { startPostgrestStandIn } from '../helpers/postgrest-standin.ts';
import { createAuthUser } from '../helpers/seed.ts';

const DAY = 86_400_000;
const today = Date.UTC(new Date().getUTCFullYear(), new Date().getUTCMonth(), new Date().getUTCDate());
const ago = (n: number) => new Date(today - n * DAY).toISOString().slice(0, 10);

interface Received {
  path: string;
  headers: Record<string, string>;
  body: string;
}

/**
 * A stand-in for the customer's endpoint: an HTTP server on 127.0.0.1 that answers each path as
 * the test says (a status, or never) and keeps every request it got.
 */
class CustomerEndpoint {
  readonly received: Received[] = [];
  private readonly answers = new Map<string, number | 'hang'>();
  private readonly hanging: ServerResponse[] = [];
  private server!: Server;
  base = '';

  async start() {
    this.server = createServer((request: IncomingMessage, response: ServerResponse) => {
      const chunks: Buffer[] = [];
      request.on('data', (chunk: Buffer) => chunks.push(chunk));
      request.on('end', () => {
        const path = request.url ?? '/';
        this.received.push({ path, headers: request.headers as Record<string, string>, body: Buffer.concat(chunks).toString('utf8') });
        const answer = this.answers.get(path) ?? 204;
        if (answer === 'hang') return void this.hanging.push(response);
        if (answer >= 300 && answer < 400) response.setHeader('location', `${this.base}/ok`);
        response.statusCode = answer;
        response.end(answer >= 400 ? `endpoint says ${answer}` : '');
      });
    });
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.base = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  answer(path: string, status: number | 'hang') {
    this.answers.set(path, status);
  }

  to(path: string) {
    return this.received.filter((request) => request.path === path);
  }

  async stop() {
    for (const response of this.hanging) response.destroy();
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/** Inserts a creative_fatigue_* event the way private.fatigue_apply does (its id, its context). */
async function insertSystemEvent(db: Database, orgId: string, campaignId: string, creativeId: string, kind: 'detected' | 'cleared', day: string) {
  const eventId = `creative_fatigue_${kind}_${createHash('md5').update(`${campaignId}/${creativeId}/${day}`).digest('hex')}`;
  await db.query('select count(*) from private.insert_events($1::jsonb)', [
    JSON.stringify([
      {
        org_id: orgId,
        event_id: eventId,
        id_source: 'client',
        type: `creative_fatigue_${kind}`,
        occurred_at: new Date(Date.parse(`${day}T00:00:00Z`) + DAY).toISOString(),
        campaign_id: campaignId,
        creative_id: creativeId,
        properties: { drop: { estimate: 0.5 }, recent: { ctr: 0.05 }, baseline: { ctr: 0.1 } },
        context: { system: 'creative-fatigue' },
      },
    ]),
  ]);
  return eventId;
}

/**
 * The watermarks take a transaction once none older runs: on Postgres any session of the server
 * (an autovacuum's ANALYZE, another database's long transaction) can hold one back for a while.
 */
async function settle(db: Database) {
  for (let i = 0; i < 1200; i += 1) {
    const { rows } = await db.query<{ settled: boolean }>(
      'select pg_snapshot_xmin(pg_current_snapshot()) > coalesce((select max(ingest_xid) from events), \'0\') as settled',
    );
    if (rows[0]!.settled) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

describe(`alert webhooks (${BACKEND})`, () => {
  let h: IngestHarness;
  let db: Database;
  const endpoint = new CustomerEndpoint();
  /** every signing secret issued in these tests: none may show up where it should not */
  const issued: string[] = [];
  const printed: string[] = [];
  const results: object[] = [];

  const run = async (input: Partial<AlertWebhooksInput> = {}) => {
    await settle(db);
    const result = (await runAlertWebhooks(db, { serverSecret: SERVER_SECRET, allowLocalhost: true, ...input })) as Record<string, any>;
    results.push(result);
    return result;
  };
  const delivery = async (orgId: string, eventId: string) =>
    (await db.query<any>('select * from alert_deliveries where org_id = $1 and event_id = $2', [orgId, eventId])).rows[0];
  /** an organization with a campaign and its alerts going to `path` of the stand-in */
  const customer = async (name: string, path: string) => {
    const org = await createOrganization(db, { name });
    const campaign = await createCampaign(db, { orgId: org.id, name: `${name} campaign` });
    const webhook = await setAlertWebhook(db, { orgId: org.id, url: `${endpoint.base}${path}` }, SERVER_SECRET, { allowLocalhost: true });
    issued.push(webhook.secret!);
    return { orgId: org.id, campaignId: campaign.id, secret: webhook.secret! };
  };

  beforeAll(async () => {
    h = await createIngestHarness();
    db = h.test.db;
    await endpoint.start();
    for (const method of ['log', 'info', 'warn', 'error'] as const) {
      vi.spyOn(console, method).mockImplementation((...args: unknown[]) => void printed.push(args.map(String).join(' ')));
    }
  });
  afterEach(async () => {
    // one test's leftovers are not the next one's
    await db.query(`update alert_deliveries set status = 'failed', next_attempt_at = null where status = 'pending'`);
  });
  afterAll(async () => {
    vi.restoreAllMocks();
    await endpoint.stop();
    await h?.close();
  });

  it('refuses bad settings, naming the field, and changes nothing', async () => {
    const org = await createOrganization(db, { name: 'Careless Co' });
    const refused = async (input: { url: string; events?: string[] }, allowLocalhost = false) => {
      try {
        await setAlertWebhook(db, { orgId: org.id, ...input }, SERVER_SECRET, { allowLocalhost });
      } catch (error) {
        expect(error).toBeInstanceOf(PreciseError);
        return { status: (error as PreciseError).status, field: (error as PreciseError).details.field, message: (error as Error).message };
      }
      throw new Error(`accepted ${JSON.stringify(input)}`);
    };
    for (const url of [
      'http://hooks.example.com/precise', // not https
      'https://10.1.2.3/hook', // private
      'https://169.254.169.254/latest/meta-data', // link-local (cloud metadata)
      'https://[fd00::1]/hook', // unique local
      'https://[::ffff:192.168.0.1]/hook', // private, IPv4-mapped
      'https://100.64.0.1/hook', // carrier-grade NAT
      'https://localhost/hook', // this machine, not allowed here
      'https://127.0.0.1:8443/hook',
      'https://db/hook', // an intranet name
      'https://printer.local/hook',
      'https://user:pw@hooks.example.com/', // credentials
      'not a url',
      '',
    ]) {
      const answer = await refused({ url });
      expect(answer, url).toMatchObject({ status: 400, field: 'alerts.webhook_url' });
    }
    // localhost is for development only, and even then never another private address
    expect(await refused({ url: 'https://192.168.1.10/hook' }, true)).toMatchObject({ status: 400, field: 'alerts.webhook_url' });
    const events = await refused({ url: 'https://hooks.example.com/precise', events: ['creative_fatigue_detected', 'budget_spent'] });
    expect(events).toMatchObject({ status: 400, field: 'alerts.events' });
    expect(events.message).toContain('budget_spent');
    expect(() => parseAlertSettings({ webhook_url: 'https://hooks.example.com', event: ['x'] })).toThrow(/alerts\.event /);
    expect(() => parseAlertSettings('https://hooks.example.com')).toThrow(PreciseError);

    const { rows } = await db.query<{ properties: any; webhooks: number }>(
      'select properties, (select count(*)::int from alert_webhooks where org_id = $1) as webhooks from organizations where id = $1',
      [org.id],
    );
    expect(rows[0]).toEqual({ properties: {}, webhooks: 0 });
    // what is allowed
    expect(parseWebhookUrl('https://hooks.example.com:8443/precise?team=ads').href).toBe('https://hooks.example.com:8443/precise?team=ads');
    expect(parseWebhookUrl('https://8.8.8.8/hook').hostname).toBe('8.8.8.8');
    expect(parseWebhookUrl('http://localhost:3000/hook', { allowLocalhost: true }).port).toBe('3000');
  });

  it('sends a real creative-fatigue verdict to the endpoint, signed so the Standard Webhooks verifier accepts it', async () => {
    const campaign = await createCampaign(db, { orgId: h.orgId, name: 'Tired', properties: { fatigue: { min_impressions: 1000 } } });
    const webhook = await setAlertWebhook(db, { orgId: h.orgId, url: `${endpoint.base}/fatigue` }, SERVER_SECRET, { allowLocalhost: true });
    expect(webhook.secret).toMatch(/^whsec_[A-Za-z0-9+/]{43}=$/);
    issued.push(webhook.secret!);
    // as in tests/integration/fatigue.test.ts: four creatives at a 10 % CTR for 30 days, one of them
    // halving over the last 10
    const plan: object[] = [];
    for (let n = 30; n >= 1; n -= 1) {
      for (const crv of ['a1', 'a2', 'a3', 'a4']) plan.push({ crv, day: ago(n), imps: 200, clks: crv === 'a1' && n <= 10 ? 10 : 20 });
    }
    await db.query(
      `insert into events (org_id, event_id, type, occurred_at, campaign_id, creative_id)
       select $1, concat_ws('-', p.crv, p.day, k.type, g), k.type,
              p.day::timestamp at time zone 'UTC' + (g * 86000.0 / greatest(k.n, 1)) * interval '1 second', $3::uuid, p.crv
       from jsonb_to_recordset($2::jsonb) as p(crv text, day date, imps int, clks int)
       cross join lateral (values ('impression', p.imps), ('click', p.clks)) as k(type, n)
       cross join lateral generate_series(1, k.n) as g`,
      [h.orgId, JSON.stringify(plan), campaign.id],
    );
    await settle(db);
    await runRollup(db);
    await runCreativeFatigue(db);
    const { rows: events } = await db.query<{ event_id: string }>(
      `select event_id from events where org_id = $1 and type = 'creative_fatigue_detected' and creative_id = 'a1'`,
      [h.orgId],
    );
    expect(events).toHaveLength(1);
    const eventId = events[0]!.event_id;

    const result = await run();
    expect(result).toMatchObject({ skipped: false, delivered: 1, retrying: 0, failed: 0 });
    const [request, ...more] = endpoint.to('/fatigue');
    expect(more).toHaveLength(0);
    expect(request!.headers).toMatchObject({ 'content-type': 'application/json', 'webhook-id': eventId });
    expect(Math.abs(Number(request!.headers['webhook-timestamp']) - Date.now() / 1000)).toBeLessThan(60);
    expect(request!.headers['webhook-signature']).toMatch(/^v1,[A-Za-z0-9+/]{43}=$/);
    // the customer's side: the reference verifier, with the secret it was shown once
    const payload = new Webhook(webhook.secret!).verify(request!.body, request!.headers) as any;
    expect(payload).toMatchObject({
      type: 'creative_fatigue_detected',
      data: { event_id: eventId, organization_id: h.orgId, campaign_id: campaign.id, creative_id: 'a1' },
    });
    expect(payload.data.evidence.drop.estimate).toBeGreaterThan(0.2);
    expect(payload.timestamp).toBe(payload.data.occurred_at);
    // another secret, a changed body or a stale timestamp do not verify
    const other = await setAlertWebhook(db, { orgId: (await createOrganization(db, { name: 'Other' })).id, url: 'https://hooks.example.com/x' }, SERVER_SECRET);
    issued.push(other.secret!);
    expect(() => new Webhook(other.secret!).verify(request!.body, request!.headers)).toThrow(WebhookVerificationError);
    expect(() => new Webhook(webhook.secret!).verify(request!.body.replace('a1', 'a2'), request!.headers)).toThrow(WebhookVerificationError);
    expect(() => new Webhook(webhook.secret!).verify(request!.body, { ...request!.headers, 'webhook-timestamp': String(Math.floor(Date.now() / 1000) - 3600) })).toThrow(
      WebhookVerificationError,
    );

    expect(await delivery(h.orgId, eventId)).toMatchObject({ status: 'delivered', attempts: 1, last_status: 204, last_error: null, next_attempt_at: null });
    // exactly once: a rerun, and a re-run fatigue job that finds the same transition, send nothing more
    await runCreativeFatigue(db);
    expect(await run()).toMatchObject({ enqueued: 0, claimed: 0 });
    expect(endpoint.to('/fatigue')).toHaveLength(1);
  }, 120_000);

  it('retries a failing endpoint with backoff and jitter, then delivers the same message', async () => {
    const { orgId, campaignId, secret } = await customer('Flaky Co', '/flaky');
    endpoint.answer('/flaky', 503);
    const eventId = await insertSystemEvent(db, orgId, campaignId, 'f1', 'detected', ago(2));
    const t0 = Date.now();
    await run({ now: t0 });
    let row = await delivery(orgId, eventId);
    expect(row).toMatchObject({ status: 'pending', attempts: 1, last_status: 503 });
    expect(row.last_error).toContain('HTTP 503: endpoint says 503');
    expect(row.next_attempt_at.getTime() - t0).toBeGreaterThanOrEqual(0.9 * 5_000);
    expect(row.next_attempt_at.getTime() - t0).toBeLessThanOrEqual(1.1 * 5_000);

    // not due yet: nothing sent
    await run({ now: t0 + 4_000 });
    expect(endpoint.to('/flaky')).toHaveLength(1);
    const t1 = t0 + 6_000;
    await run({ now: t1 });
    row = await delivery(orgId, eventId);
    expect(row).toMatchObject({ status: 'pending', attempts: 2, last_status: 503 });
    expect(row.next_attempt_at.getTime() - t1).toBeGreaterThanOrEqual(0.9 * 300_000);
    expect(row.next_attempt_at.getTime() - t1).toBeLessThanOrEqual(1.1 * 300_000);

    endpoint.answer('/flaky', 200);
    await run({ now: row.next_attempt_at.getTime() });
    expect(await delivery(orgId, eventId)).toMatchObject({ status: 'delivered', attempts: 3, last_status: 200, last_error: null });
    const requests = endpoint.to('/flaky');
    expect(requests).toHaveLength(3);
    // the same message each time (the receiver dedups on webhook-id), each signed anew
    expect(new Set(requests.map((r) => r.headers['webhook-id']))).toEqual(new Set([eventId]));
    expect(new Set(requests.map((r) => r.body)).size).toBe(1);
    for (const request of requests) expect(() => new Webhook(secret).verify(request.body, request.headers)).not.toThrow();
  });

  it('gives up after the last attempt of the schedule (5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h)', async () => {
    const { orgId, campaignId } = await customer('Broken Co', '/broken');
    endpoint.answer('/broken', 500);
    const eventId = await insertSystemEvent(db, orgId, campaignId, 'b1', 'detected', ago(2));
    let now = Date.now();
    const waits: number[] = [];
    for (let i = 1; i <= MAX_ATTEMPTS; i += 1) {
      await run({ now });
      const row = await delivery(orgId, eventId);
      expect(row.attempts).toBe(i);
      if (i === MAX_ATTEMPTS) break;
      waits.push(row.next_attempt_at.getTime() - now);
      now = row.next_attempt_at.getTime();
    }
    expect(waits).toHaveLength(RETRY_DELAYS_MS.length);
    waits.forEach((wait, i) => {
      expect(wait).toBeGreaterThanOrEqual(0.9 * RETRY_DELAYS_MS[i]!);
      expect(wait).toBeLessThanOrEqual(1.1 * RETRY_DELAYS_MS[i]!);
    });
    // jittered: not all exactly on the schedule
    expect(waits.some((wait, i) => wait !== RETRY_DELAYS_MS[i])).toBe(true);
    const row = await delivery(orgId, eventId);
    expect(row).toMatchObject({ status: 'failed', attempts: 8, last_status: 500, next_attempt_at: null, delivered_at: null });
    expect(row.last_error).toContain('gave up after 8 attempts');
    await run({ now: now + 100 * 3_600_000 });
    expect(endpoint.to('/broken')).toHaveLength(8);
  });

  it('does not follow redirects, and gives up on an endpoint that does not answer in time', async () => {
    const { orgId, campaignId } = await customer('Moved Co', '/moved');
    endpoint.answer('/moved', 302);
    const moved = await insertSystemEvent(db, orgId, campaignId, 'm1', 'detected', ago(2));
    const okBefore = endpoint.to('/ok').length;
    await run();
    expect(await delivery(orgId, moved)).toMatchObject({ status: 'pending', attempts: 1, last_status: 302 });
    expect((await delivery(orgId, moved)).last_error).toContain('redirects are not followed');
    expect(endpoint.to('/ok')).toHaveLength(okBefore);

    const slow = await customer('Slow Co', '/slow');
    endpoint.answer('/slow', 'hang');
    const stuck = await insertSystemEvent(db, slow.orgId, slow.campaignId, 's1', 'detected', ago(2));
    const started = performance.now();
    await run({ timeoutMs: 300 });
    expect(performance.now() - started).toBeLessThan(10_000);
    const row = await delivery(slow.orgId, stuck);
    expect(row).toMatchObject({ status: 'pending', attempts: 1, last_status: null });
    expect(row.last_error).toMatch(/no answer: no answer within 0.3 s/);
  });

  it('disables the URL on 410 Gone, sends it nothing more, and sets it going again when the alerts are set again', async () => {
    const { orgId, campaignId, secret } = await customer('Gone Co', '/gone');
    endpoint.answer('/gone', 410);
    const first = await insertSystemEvent(db, orgId, campaignId, 'g1', 'detected', ago(3));
    const second = await insertSystemEvent(db, orgId, campaignId, 'g2', 'detected', ago(3));
    const result = await run({ limit: 1 });
    expect(result).toMatchObject({ disabled: 1, failed: 1 });
    const gone = (await delivery(orgId, first)).status === 'failed' ? first : second;
    const waiting = gone === first ? second : first;
    expect(await delivery(orgId, gone)).toMatchObject({ status: 'failed', attempts: 1, last_status: 410 });
    const { rows } = await db.query<any>('select disabled_url, disabled_at from alert_webhooks where org_id = $1', [orgId]);
    expect(rows[0].disabled_url).toBe(`${endpoint.base}/gone`);
    expect(rows[0].disabled_at).not.toBeNull();

    // the other one fails unsent, and a new event is not even enqueued
    await run();
    expect(await delivery(orgId, waiting)).toMatchObject({ status: 'failed', attempts: 0, last_status: null });
    expect((await delivery(orgId, waiting)).last_error).toContain('410 Gone');
    const third = await insertSystemEvent(db, orgId, campaignId, 'g3', 'cleared', ago(1));
    await run();
    expect(await delivery(orgId, third)).toBeUndefined();
    expect(endpoint.to('/gone')).toHaveLength(1);

    // set again (the same URL): on again, with the same secret (not shown again)
    endpoint.answer('/gone', 204);
    const again = await setAlertWebhook(db, { orgId, url: `${endpoint.base}/gone` }, SERVER_SECRET, { allowLocalhost: true });
    expect(again.secret).toBeUndefined();
    const fourth = await insertSystemEvent(db, orgId, campaignId, 'g4', 'cleared', ago(1));
    await run();
    expect(await delivery(orgId, fourth)).toMatchObject({ status: 'delivered' });
    const last = endpoint.to('/gone').at(-1)!;
    expect(() => new Webhook(secret).verify(last.body, last.headers)).not.toThrow();
  });

  it('sends only what the settings ask for, only events Precise wrote, and checks the settings again at send time', async () => {
    const { orgId, campaignId } = await customer('Picky Co', '/picky');
    await setAlertWebhook(db, { orgId, url: `${endpoint.base}/picky`, events: ['creative_fatigue_cleared'] }, SERVER_SECRET, { allowLocalhost: true });
    const detected = await insertSystemEvent(db, orgId, campaignId, 'p1', 'detected', ago(2));
    const cleared = await insertSystemEvent(db, orgId, campaignId, 'p1', 'cleared', ago(1));
    // a sender's own event of that type is no alert (no system context)
    const key = await createApiKey(db, { orgId, kind: 'secret', scopes: ['ingest'] });
    const response = await h.app.request('/v1/events', {
      method: 'POST',
      headers: { authorization: `Bearer ${key.key}` },
      body: JSON.stringify({ events: [{ event_id: 'forged-1', type: 'creative_fatigue_cleared', campaign_id: campaignId, creative_id: 'p9' }] }),
    });
    expect(response.status).toBe(202);
    await run();
    expect(await delivery(orgId, detected)).toBeUndefined();
    expect(await delivery(orgId, 'forged-1')).toBeUndefined();
    expect(await delivery(orgId, cleared)).toMatchObject({ status: 'delivered' });

    // an admin changed the settings directly (RLS lets them) to a private address: nothing is sent
    await db.query(`update organizations set properties = jsonb_set(properties, '{alerts,webhook_url}', '"https://10.0.0.7/steal"') where id = $1`, [orgId]);
    const later = await insertSystemEvent(db, orgId, campaignId, 'p2', 'cleared', ago(1));
    const result = await run();
    expect(result.settings_errors).toEqual([expect.objectContaining({ org_id: orgId, field: 'alerts.webhook_url' })]);
    const row = await delivery(orgId, later);
    expect(row).toMatchObject({ status: 'pending', attempts: 1, last_status: null });
    expect(row.last_error).toContain('alerts.webhook_url must be a public address');

    // alerts removed: what is pending fails, unsent
    await removeAlertWebhook(db, orgId);
    await run({ now: Date.now() + 60_000 });
    expect(await delivery(orgId, later)).toMatchObject({ status: 'failed', attempts: 1 });
    expect((await delivery(orgId, later)).last_error).toContain('no longer configured');
  });

  it('refuses to connect where a name resolves to a non-public address', async () => {
    // localhost passes the URL check only when allowed; the connection checks the resolved address again
    const url = new URL(`${endpoint.base.replace('127.0.0.1', 'localhost')}/resolved`);
    await expect(postWebhook(url, {}, '{}', { timeoutMs: 2_000 })).rejects.toThrow(/resolves to .*not a public address/);
    expect(endpoint.to('/resolved')).toHaveLength(0);
    await expect(postWebhook(url, {}, '{}', { timeoutMs: 2_000, allowLocalhost: true })).resolves.toMatchObject({ status: 204 });
  });

  it('signs with both secrets for a day after a rotation, and refuses to sign with another server secret', async () => {
    const { orgId, campaignId, secret: before } = await customer('Rotating Co', '/rotating');
    const rotated = await setAlertWebhook(db, { orgId, url: `${endpoint.base}/rotating`, rotateSecret: true }, SERVER_SECRET, { allowLocalhost: true });
    issued.push(rotated.secret!);
    expect(rotated).toMatchObject({ secret_version: 2 });
    expect(rotated.secret).not.toBe(before);
    const eventId = await insertSystemEvent(db, orgId, campaignId, 'r1', 'detected', ago(2));
    await run();
    const request = endpoint.to('/rotating').at(-1)!;
    expect(request.headers['webhook-signature']!.split(' ')).toHaveLength(2);
    for (const secret of [before, rotated.secret!]) expect(() => new Webhook(secret).verify(request.body, request.headers)).not.toThrow();
    expect(await delivery(orgId, eventId)).toMatchObject({ status: 'delivered' });

    // a worker started with another PRECISE_SECRET: nothing sent, the delivery waits for a fix
    const next = await insertSystemEvent(db, orgId, campaignId, 'r2', 'detected', ago(2));
    await run({ serverSecret: 'another-server-secret-0123456789-0123456789' });
    expect(await delivery(orgId, next)).toMatchObject({ status: 'pending', attempts: 1, last_status: null });
    expect((await delivery(orgId, next)).last_error).toContain('PRECISE_SECRET differs');
    await expect(
      setAlertWebhook(db, { orgId, url: `${endpoint.base}/rotating` }, 'another-server-secret-0123456789-0123456789', { allowLocalhost: true }),
    ).rejects.toMatchObject({ code: 'conflict' });
    // a day on, only the new secret signs
    await run({ now: Date.now() + 25 * 3_600_000 });
    const after = endpoint.to('/rotating').at(-1)!;
    expect(after.headers['webhook-id']).toBe(next);
    expect(after.headers['webhook-signature']!.split(' ')).toHaveLength(1);
    expect(() => new Webhook(before).verify(after.body, after.headers)).toThrow(WebhookVerificationError);
    expect(() => new Webhook(rotated.secret!).verify(after.body, after.headers)).not.toThrow();
  });

  it('serves the delivery log (GET /v1/alerts/deliveries), and refuses bad parameters by name', async () => {
    const read = await createApiKey(db, { orgId: h.orgId, kind: 'secret', scopes: ['read'] });
    const get = async (query: string, key = read.key) => {
      const response = await h.app.request(`/v1/alerts/deliveries${query}`, { headers: { authorization: `Bearer ${key}` } });
      return { status: response.status, text: await response.text() };
    };
    const ok = await get('?status=delivered&limit=5');
    expect(ok.status).toBe(200);
    const body = JSON.parse(ok.text);
    expect(body.webhook).toMatchObject({ webhook_url: `${endpoint.base}/fatigue`, secret_version: 1, disabled_url: null });
    expect(body.data).toEqual([expect.objectContaining({ event_type: 'creative_fatigue_detected', status: 'delivered', attempts: 1, last_status: 204 })]);
    // only the organization's own
    const { rows } = await db.query<{ n: number }>('select count(*)::int as n from alert_deliveries where org_id <> $1', [h.orgId]);
    expect(rows[0]!.n).toBeGreaterThan(1);
    for (const [query, field] of [['?status=done', 'status'], ['?limit=0', 'limit'], ['?limit=5000', 'limit'], ['?limit=ten', 'limit']]) {
      const bad = await get(query!);
      expect(bad.status, query).toBe(400);
      expect(JSON.parse(bad.text).error.details.field).toBe(field);
    }
    expect((await get('', h.ingestKey)).status).toBe(403);
    for (const secret of [...issued, SERVER_SECRET]) expect(ok.text).not.toContain(secret);

    // the same through supabase-js rpc (a Supabase edge deployment; PostgREST stand-in)
    const serviceRoleKey = 'service-role-key-for-the-stand-in';
    const postgrest = await startPostgrestStandIn(db, serviceRoleKey);
    try {
      const client = supabaseServiceClient(postgrest.url, serviceRoleKey);
      const services: Services = { ...h.services, keys: new KeyCache(supabaseKeyStore(client)), alerts: supabaseAlertLogReader(client) };
      const app = createApp({ services: () => services });
      for (const query of ['?status=delivered&limit=5', '', '?status=done']) {
        const viaRpc = await app.request(`/v1/alerts/deliveries${query}`, { headers: { authorization: `Bearer ${read.key}` } });
        const viaSql = await get(query);
        expect(viaRpc.status).toBe(viaSql.status);
        const [rpcBody, sqlBody] = [await viaRpc.json(), JSON.parse(viaSql.text)] as any[];
        if (viaSql.status === 200) expect(rpcBody).toEqual(sqlBody);
        else expect(rpcBody.error.details).toEqual(sqlBody.error.details);
      }
      expect(postgrest.calls).toContain('alert_delivery_log');
    } finally {
      await postgrest.close();
    }
  });

  it('lets members read their own organization\u2019s webhook and deliveries, and write none', async () => {
    const viewer = await createAuthUser(db, 'viewer@alerts.test');
    await db.query(`insert into org_members (org_id, user_id, role) values ($1, $2, 'viewer')`, [h.orgId, viewer]);
    const seen = await asUser(db, viewer, async (tx) => ({
      deliveries: (await tx.query<{ org_id: string }>('select org_id from public.alert_deliveries')).rows,
      webhooks: (await tx.query<{ org_id: string }>('select org_id from public.alert_webhooks')).rows,
      update: await attempt(tx, `update public.alert_deliveries set status = 'pending'`),
      insert: await attempt(tx, `insert into public.alert_webhooks (org_id, secret_hash) values ($1, repeat('0', 64))`, [h.orgId]),
      log: await attempt(tx, 'select public.alert_delivery_log($1, null, 10)', [h.orgId]),
    }));
    expect(seen.deliveries.length).toBeGreaterThan(0);
    expect(new Set(seen.deliveries.map((row) => row.org_id))).toEqual(new Set([h.orgId]));
    expect(seen.webhooks.map((row) => row.org_id)).toEqual([h.orgId]);
    expect(seen.update.rowCount).toBe(0);
    expect(seen.insert.code).toBe('42501');
    expect(seen.log.code).toBe('42501');
    const stranger = await createAuthUser(db, 'stranger@alerts.test');
    expect(await asUser(db, stranger, async (tx) => (await tx.query('select * from public.alert_deliveries')).rows)).toHaveLength(0);
    expect(await asUser(db, null, async (tx) => attempt(tx, 'select * from public.alert_webhooks'))).toMatchObject({ code: '42501' });
  });

  it.runIf(BACKEND === 'postgres')('runs under the pg-boss scheduler, the server secret in neither its log nor its tables', async () => {
    const { orgId, campaignId } = await customer('Scheduled Co', '/scheduled');
    const eventId = await insertSystemEvent(db, orgId, campaignId, 'q1', 'detected', ago(2));
    await settle(db);
    const scheduler = await startScheduler({
      connectionString: h.test.url!,
      db,
      jobs: [{ ...alertWebhooksJob, cron: undefined }],
      defaults: jobDefaults(parseNodeConfig({ ALERT_WEBHOOK_ALLOW_LOCALHOST: 'true' }), SERVER_SECRET),
      log: (line) => printed.push(line),
    });
    try {
      await scheduler.boss.send('alert-webhooks', {});
      for (let i = 0; i < 300 && (await delivery(orgId, eventId))?.status !== 'delivered'; i += 1) await new Promise((resolve) => setTimeout(resolve, 100));
      expect(await delivery(orgId, eventId)).toMatchObject({ status: 'delivered' });
    } finally {
      await scheduler.stop();
    }
    expect(printed.some((line) => line.startsWith('jobs: alert-webhooks done'))).toBe(true);
    const { rows } = await db.query<{ dump: string }>(`select coalesce(json_agg(j)::text, '') as dump from pgboss.job j`);
    expect(rows[0]!.dump).toContain('alert-webhooks');
    expect(rows[0]!.dump).not.toContain(SERVER_SECRET);
  });

  it('never stores, logs or answers a signing secret', async () => {
    expect(issued.length).toBeGreaterThanOrEqual(8);
    const { rows } = await db.query<{ dump: string }>(
      `select concat_ws(' ', (select json_agg(w)::text from alert_webhooks w), (select json_agg(d)::text from alert_deliveries d),
                        (select json_agg(o)::text from organizations o), (select json_agg(a)::text from audit_log a),
                        (select json_agg(s)::text from rollup_state s)) as dump`,
    );
    const places = { database: rows[0]!.dump, printed: printed.join('\n'), results: JSON.stringify(results) };
    expect(places.database.length).toBeGreaterThan(1000);
    expect(results.length).toBeGreaterThan(10);
    for (const [place, text] of Object.entries(places)) {
      for (const secret of [...issued, SERVER_SECRET]) {
        expect(text.includes(secret), `${place} holds a secret`).toBe(false);
        // nor its bare base64 (the part after whsec_)
        expect(text.includes(secret.replace(/^whsec_/, '')), `${place} holds a secret's key`).toBe(false);
      }
    }
    // what is stored instead: its hash
    const { rows: hashes } = await db.query<{ secret_hash: string }>('select secret_hash from alert_webhooks where org_id = $1', [h.orgId]);
    expect(hashes[0]!.secret_hash).toBe(alertSecretHash(issued[0]!));
  });
});

describe(`precise alerts and jobs run alert-webhooks (${BACKEND})`, () => {
  let cli: CliSandbox;
  const endpoint = new CustomerEndpoint();

  beforeAll(async () => {
    cli = await createCliSandbox();
    Object.assign(cli.env, { PRECISE_SECRET: 'cli-test-server-secret-0123456789-0123456789', ALERT_WEBHOOK_ALLOW_LOCALHOST: 'true' });
    expect((await cli.run('migrate')).code).toBe(0);
    await endpoint.start();
  });
  afterAll(async () => {
    await endpoint.stop();
    await cli?.dispose();
  });

  it('sets the webhook, shows the secret once, delivers through jobs run, and shows the log', async () => {
    const org = (await cli.run('org', 'create', '--name', 'CLI Alerts', '--json')).json.id as string;
    const campaign = (await cli.run('campaign', 'create', '--org', org, '--name', 'C', '--json')).json.id as string;

    const bad = await cli.run('alerts', 'set', '--org', org, '--url', 'https://10.9.8.7/hook', '--json');
    expect(bad.code).toBe(2);
    expect(JSON.parse(bad.err).error.details.field).toBe('alerts.webhook_url');
    const badEvents = await cli.run('alerts', 'set', '--org', org, '--url', `${endpoint.base}/cli`, '--events', 'creative_fatigue_maybe');
    expect([badEvents.code, badEvents.err]).toEqual([2, expect.stringContaining('alerts.events')]);

    const set = await cli.run('alerts', 'set', '--org', org, '--url', `${endpoint.base}/cli`);
    expect(set.code).toBe(0);
    const secret = /signing secret \(version 1\): (whsec_\S+)/.exec(set.out)?.[1];
    expect(secret).toBeDefined();
    expect(set.out).toContain('not shown again');
    const again = await cli.run('alerts', 'set', '--org', org, '--url', `${endpoint.base}/cli`, '--json');
    expect(again.code).toBe(0);
    expect(again.json.secret).toBeUndefined();
    expect(again.out).not.toContain(secret!);

    const eventId = await cli.inspect(async (db) => {
      const id = await insertSystemEvent(db, org, campaign, 'c1', 'detected', ago(2));
      await settle(db);
      return id;
    });
    const job = await cli.run('jobs', 'run', 'alert-webhooks', '--json');
    expect(job.code).toBe(0);
    expect(job.json.result).toMatchObject({ delivered: 1 });
    const [request] = endpoint.to('/cli');
    expect(request!.headers['webhook-id']).toBe(eventId);
    expect(new Webhook(secret!).verify(request!.body, request!.headers)).toMatchObject({ type: 'creative_fatigue_detected' });

    const log = await cli.run('alerts', 'log', '--org', org, '--json');
    expect(log.code).toBe(0);
    expect(log.json.data).toEqual([expect.objectContaining({ event_id: eventId, status: 'delivered', attempts: 1 })]);
    const human = await cli.run('alerts', 'log', '--org', org);
    expect(human.out).toContain(`${eventId}  delivered, 1 attempt(s)`);
    for (const run of [job, log, human, again]) {
      expect(run.out + run.err).not.toContain(secret!);
      expect(run.out + run.err).not.toContain(cli.env.PRECISE_SECRET!);
    }
    expect((await cli.run('alerts', 'remove', '--org', org)).out).toContain('removed');
  }, 120_000);
});
