import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApiKey, createCampaign, createOrganization } from '../../core/admin.ts';
import { KeyCache, supabaseKeyStore } from '../../core/auth.ts';
import { supabaseServiceClient } from '../../core/db/supabase-client.ts';
import { supabaseFatigueReader } from '../../core/fatigue-query.ts';
import { createApp } from '../../functions/app.ts';
import type { Services } from '../../functions/env.ts';
import { runCreativeFatigue } from '../../scheduled/jobs/creative-fatigue.ts';
import { runRollup } from '../../scheduled/jobs/rollup.ts';
import { asUser, attempt, BACKEND } from '../helpers/database.ts';
import { createIngestHarness, type IngestHarness } from '../helpers/ingest.ts';
import { startPostgrestStandIn } from '../helpers/postgrest-standin.ts';
import { createAuthUser } from '../helpers/seed.ts';

const DAY = 86_400_000;
const today = Date.UTC(new Date().getUTCFullYear(), new Date().getUTCMonth(), new Date().getUTCDate());
/** the UTC day `n` days before today (1 = yesterday, the last complete day) */
const ago = (n: number) => new Date(today - n * DAY).toISOString().slice(0, 10);

/** One row of the plan: a creative's impressions and clicks on a day. */
interface PlanRow {
  campaign: string;
  crv: string;
  day: string;
  imps: number;
  clks: number;
}

// Events → rollup → creative-fatigue job → API, on 30 days (ago(30) … ago(1)):
//   campaign A (min_impressions 1,000): a1…a4 at 200 impressions and 20 clicks a day; a1 loses
//     half its clicks over the last 10 days (fatigued); a5 shows 10 impressions a day, a click
//     every third day (insufficient_data; sent through the batch API).
//   campaign B: b1…b3 at the same volume, all three lose half over the last 10 days (market_shift).
//   campaign C: bad settings (fatigue.min_drop 2): held back and reported.
//   another organization's campaign: 404.
describe(`creative fatigue (${BACKEND})`, () => {
  let h: IngestHarness;
  let readKey: string;
  let campaignA: string;
  let campaignB: string;
  let campaignC: string;
  let foreignCampaign: string;
  let firstRun: Record<string, any>;

  /** Inserts the plan's impressions and clicks as events, spread over each day (the direct SQL writer's shape). */
  const insertPlan = async (rows: PlanRow[], tag: string) => {
    await h.test.db.query(
      `insert into events (org_id, event_id, type, occurred_at, campaign_id, creative_id)
       select $1, concat_ws('-', $3::text, p.crv, p.day, k.type, g), k.type,
              p.day::timestamp at time zone 'UTC' + (g * 86000.0 / greatest(k.n, 1)) * interval '1 second', p.campaign::uuid, p.crv
       from jsonb_to_recordset($2::jsonb) as p(campaign text, crv text, day date, imps int, clks int)
       cross join lateral (values ('impression', p.imps), ('click', p.clks)) as k(type, n)
       cross join lateral generate_series(1, k.n) as g`,
      [h.orgId, JSON.stringify(rows), tag],
    );
  };
  const job = async () => {
    await h.services.sink.close?.();
    // the watermarks take a transaction once none older is running (an autovacuum's ANALYZE
    // holds one back on Postgres for a moment): wait for that, so that one run sees every event
    for (let i = 0; i < 200; i += 1) {
      const { rows } = await h.test.db.query<{ settled: boolean }>(
        'select pg_snapshot_xmin(pg_current_snapshot()) > (select max(ingest_xid) from events) as settled',
      );
      if (rows[0]!.settled) break;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    await runRollup(h.test.db);
    return (await runCreativeFatigue(h.test.db)) as Record<string, any>;
  };
  const get = async (path: string, query: Record<string, string>, key = readKey, app = h.app) => {
    const response = await app.request(`${path}?${new URLSearchParams(query)}`, { headers: { authorization: `Bearer ${key}` } });
    return { status: response.status, body: (await response.json()) as any };
  };
  const verdicts = async (campaignId: string, query: Record<string, string> = {}) => {
    const { status, body } = await get('/v1/fatigue', { campaign_id: campaignId, ...query });
    expect(status).toBe(200);
    return Object.fromEntries(body.data.map((row: any) => [row.creative_id, row]));
  };
  const counts = async () => {
    const { rows } = await h.test.db.query<{ events: number; points: number; verdicts: number; days: number }>(
      `select (select count(*)::int from events where org_id = $1 and type like 'creative_fatigue_%') as events,
              (select count(*)::int from metrics where org_id = $1 and metric in ('fatigue_score', 'ctr_baseline', 'ctr_recent')) as points,
              (select count(*)::int from fatigue_verdicts where org_id = $1) as verdicts,
              (select count(*)::int from fatigue_days where org_id = $1) as days`,
      [h.orgId],
    );
    return rows[0]!;
  };

  beforeAll(async () => {
    h = await createIngestHarness();
    readKey = (await createApiKey(h.test.db, { orgId: h.orgId, kind: 'secret', scopes: ['read'] })).key;
    campaignA = (await createCampaign(h.test.db, { orgId: h.orgId, name: 'A', properties: { fatigue: { min_impressions: 1000 } } })).id;
    campaignB = (await createCampaign(h.test.db, { orgId: h.orgId, name: 'B', properties: { fatigue: { min_impressions: 1000 } } })).id;
    campaignC = (await createCampaign(h.test.db, { orgId: h.orgId, name: 'C', properties: { fatigue: { min_drop: 2 } } })).id;
    const other = await createOrganization(h.test.db, { name: 'Other Co' });
    foreignCampaign = (await createCampaign(h.test.db, { orgId: other.id, name: 'Theirs' })).id;

    const plan: PlanRow[] = [];
    for (let n = 30; n >= 1; n -= 1) {
      const dropped = n <= 10;
      for (const crv of ['a1', 'a2', 'a3', 'a4']) {
        plan.push({ campaign: campaignA, crv, day: ago(n), imps: 200, clks: crv === 'a1' && dropped ? 10 : 20 });
      }
      for (const crv of ['b1', 'b2', 'b3']) plan.push({ campaign: campaignB, crv, day: ago(n), imps: 200, clks: dropped ? 10 : 20 });
    }
    plan.push({ campaign: campaignC, crv: 'c1', day: ago(3), imps: 5, clks: 1 });
    await insertPlan(plan, 'seed');

    // the quiet creative through the public batch API
    const events: object[] = [];
    for (let n = 30; n >= 1; n -= 1) {
      for (let i = 0; i < 10; i += 1) {
        events.push({ event_id: `a5-${n}-${i}`, type: 'impression', campaign_id: campaignA, creative_id: 'a5', occurred_at: today - n * DAY + i * 3_600_000 });
      }
      if (n % 3 === 0) events.push({ event_id: `a5-${n}-c`, type: 'click', campaign_id: campaignA, creative_id: 'a5', occurred_at: today - n * DAY + 11 * 3_600_000 });
    }
    const response = await h.app.request('/v1/events', {
      method: 'POST',
      headers: { authorization: `Bearer ${h.ingestKey}` },
      body: JSON.stringify({ events }),
    });
    expect(response.status).toBe(202);
    firstRun = await job();
  }, 120_000);
  afterAll(() => h?.close());

  it('flags the creative whose CTR halved, with its evidence, and keeps the others healthy', async () => {
    const rows = await verdicts(campaignA);
    expect(Object.keys(rows).sort()).toEqual(['a1', 'a2', 'a3', 'a4', 'a5']);
    expect(rows.a1.status).toBe('fatigued');
    expect(rows.a1.score).toBeGreaterThanOrEqual(1);
    const evidence = rows.a1.evidence;
    expect(evidence.recent).toMatchObject({ impressions: 1400, clicks: 70, ctr: 0.05 });
    expect(evidence.baseline.ctr).toBeCloseTo(0.1, 10);
    expect(evidence.drop.estimate).toBeCloseTo(0.5, 10);
    expect(evidence.test.statistic).toBeGreaterThan(evidence.test.threshold);
    for (const crv of ['a2', 'a3', 'a4']) expect(rows[crv]).toMatchObject({ status: 'healthy' });
    expect(rows.a5.status).toBe('insufficient_data');

    // the transition is one event, its evidence in the properties; none for the healthy ones
    const { rows: detected } = await h.test.db.query<{ creative_id: string; properties: any; occurred_at: Date }>(
      `select creative_id, properties, occurred_at from events where org_id = $1 and type = 'creative_fatigue_detected' and campaign_id = $2`,
      [h.orgId, campaignA],
    );
    expect(detected.map((row) => row.creative_id)).toEqual(['a1']);
    expect(detected[0]!.properties.drop.estimate).toBeGreaterThan(0.2);
    expect(new Date(detected[0]!.occurred_at).getTime()).toBeGreaterThan(today - 10 * DAY);
  });

  it('tells a campaign-wide dip as market_shift', async () => {
    const rows = await verdicts(campaignB);
    for (const crv of ['b1', 'b2', 'b3']) expect(rows[crv].status).toBe('market_shift');
    expect(rows.b1.evidence.market.shared).toBe(true);
  });

  it('writes the daily metrics and serves the daily series', async () => {
    const { status, body } = await get(`/v1/fatigue/a1`, { campaign_id: campaignA });
    expect(status).toBe(200);
    expect(body.data).toHaveLength(30);
    const last = body.data.at(-1);
    expect(last).toMatchObject({ day: ago(1), impressions: 200, clicks: 10, ctr: 0.05, status: 'fatigued' });
    expect(last.baseline).toBeCloseTo(0.1, 10);
    expect(last.statistic).toBeGreaterThan(2.83);
    expect(body.data[0]).toMatchObject({ day: ago(30), status: 'insufficient_data', baseline: null });

    const { rows } = await h.test.db.query<{ metric: string; value: string }>(
      `select metric, value::text from metrics
       where org_id = $1 and entity_type = 'creative' and entity_id = 'a1' and granularity = 'day'
         and dimensions = jsonb_build_object('campaign_id', $2::text) and bucket_start = $3::date::timestamp at time zone 'UTC'`,
      [h.orgId, campaignA, ago(1)],
    );
    const byMetric = Object.fromEntries(rows.map((row) => [row.metric, Number(row.value)]));
    expect(byMetric.ctr_baseline).toBeCloseTo(0.1, 10);
    expect(byMetric.ctr_recent).toBeCloseTo(0.05, 10);
    expect(byMetric.fatigue_score).toBeCloseTo(last.score, 10);

    // the scores are never summed into GET /v1/metrics (its sums read the 15-minute grain)
    const metrics = await get('/v1/metrics', {
      metric: 'impressions', entity_type: 'creative', entity_id: 'a1', granularity: 'day', from: ago(1), to: ago(0), tz: 'UTC',
    });
    expect(metrics.status).toBe(200);
    expect(metrics.body.data).toEqual([expect.objectContaining({ metric: 'impressions', value: 200 })]);
  });

  it('answers a past day with as_of', async () => {
    const rows = await verdicts(campaignA, { as_of: ago(12) });
    expect(rows.a1.status).toBe('healthy');
    expect(rows.a1.since).not.toBeNull();
  });

  it('holds back a campaign with bad settings and says why', async () => {
    expect(firstRun.settings_errors).toEqual([
      expect.objectContaining({ campaign_id: campaignC, field: 'properties.fatigue.min_drop' }),
    ]);
    const { status, body } = await get('/v1/fatigue', { campaign_id: campaignC });
    expect(status).toBe(400);
    expect(body.error.details.field).toBe('properties.fatigue.min_drop');
  });

  it('refuses bad parameters by name, and another organization\u2019s campaign', async () => {
    expect((await get('/v1/fatigue', {})).body.error.details.field).toBe('campaign_id');
    expect((await get('/v1/fatigue', { campaign_id: 'nope' })).status).toBe(400);
    const asOf = await get('/v1/fatigue', { campaign_id: campaignA, as_of: '2026-02-30' });
    expect([asOf.status, asOf.body.error.details.field]).toEqual([400, 'as_of']);
    const tz = await get('/v1/fatigue/a1', { campaign_id: campaignA, tz: 'Europe/Berlin' });
    expect([tz.status, tz.body.error.details.field]).toEqual([400, 'tz']);
    const foreign = await get('/v1/fatigue', { campaign_id: foreignCampaign });
    expect([foreign.status, foreign.body.error.details.field]).toEqual([404, 'campaign_id']);
    expect((await get('/v1/fatigue/a1', { campaign_id: foreignCampaign })).status).toBe(404);
    const nul = await get('/v1/fatigue/a%00b', { campaign_id: campaignA });
    expect([nul.status, nul.body.error.details.field]).toEqual([400, 'creative_id']);
    const unknown = await get('/v1/fatigue/zz', { campaign_id: campaignA });
    expect([unknown.status, unknown.body.error.details.field]).toEqual([404, 'creative_id']);
    // a key without read
    expect((await get('/v1/fatigue', { campaign_id: campaignA }, h.ingestKey)).status).toBe(403);
  });

  it('changes nothing on a rerun', async () => {
    const before = await counts();
    expect(before.events).toBeGreaterThanOrEqual(1);
    const rerun = await job();
    expect(rerun).toMatchObject({ unchanged: 2, days_stepped: 0, events: 0, restepped: [] });
    expect(await counts()).toEqual(before);
  });

  it('reads the same counts a campaign at a time as an organization at once', async () => {
    // an organization too large to read at once is read per campaign: the counts stored from the
    // organization's read must equal them, or the run would re-step
    const before = await counts();
    const rerun = (await runCreativeFatigue(h.test.db, {}, { orgReadCreatives: 0 })) as Record<string, any>;
    expect(rerun).toMatchObject({ unchanged: 2, days_stepped: 0, restepped: [] });
    expect(await counts()).toEqual(before);
  });

  it('re-steps from the day late data changed, and only that campaign', async () => {
    const before = await counts();
    const { rows: kept } = await h.test.db.query<{ n: number }>(
      `select count(*)::int as n from fatigue_days where org_id = $1 and campaign_id = $2 and day < $3`,
      [h.orgId, campaignA, ago(20)],
    );
    await insertPlan([{ campaign: campaignA, crv: 'a2', day: ago(20), imps: 30, clks: 3 }], 'late');
    const late = await job();
    expect(late.restepped).toEqual([{ campaign_id: campaignA, from: ago(20) }]);
    expect(late.days_stepped).toBe(20);
    expect(late.unchanged).toBe(1);
    // the days before were not rewritten: their rows are the same ones
    const { rows: still } = await h.test.db.query<{ n: number }>(
      `select count(*)::int as n from fatigue_days where org_id = $1 and campaign_id = $2 and day < $3 and updated_at < (select max(updated_at) from fatigue_days where org_id = $1 and campaign_id = $2)`,
      [h.orgId, campaignA, ago(20)],
    );
    expect(still[0]!.n).toBe(kept[0]!.n);
    const { rows: counted } = await h.test.db.query<{ counts: any }>(
      `select counts from fatigue_days where org_id = $1 and campaign_id = $2 and day = $3`,
      [h.orgId, campaignA, ago(20)],
    );
    expect(counted[0]!.counts.a2).toEqual([230, 23]);
    // same verdict rows and points, and the fatigued transition was not told twice
    expect(await counts()).toEqual(before);
  });

  it('reads the same through supabase-js rpc (PostgREST stand-in)', async () => {
    const serviceRoleKey = 'service-role-key-for-the-stand-in';
    const postgrest = await startPostgrestStandIn(h.test.db, serviceRoleKey);
    try {
      const client = supabaseServiceClient(postgrest.url, serviceRoleKey);
      const services: Services = { ...h.services, keys: new KeyCache(supabaseKeyStore(client)), fatigue: supabaseFatigueReader(client) };
      const app = createApp({ services: () => services });
      for (const [path, query] of [
        ['/v1/fatigue', { campaign_id: campaignA }],
        ['/v1/fatigue', { campaign_id: campaignB, as_of: ago(5) }],
        ['/v1/fatigue', { campaign_id: campaignC }],
        ['/v1/fatigue', { campaign_id: foreignCampaign }],
        ['/v1/fatigue/a1', { campaign_id: campaignA }],
      ] as Array<[string, Record<string, string>]>) {
        const viaRpc = await get(path, query, readKey, app);
        const viaSql = await get(path, query);
        expect(viaRpc.status).toBe(viaSql.status);
        if (viaSql.status === 200) expect(viaRpc.body).toEqual(viaSql.body);
        else expect(viaRpc.body.error.details).toEqual(viaSql.body.error.details);
      }
      expect(postgrest.calls).toEqual(expect.arrayContaining(['fatigue_campaign', 'fatigue_creative_series']));
    } finally {
      await postgrest.close();
    }
  });

  it('lets members read their own organization\u2019s verdicts and write none', async () => {
    const viewer = await createAuthUser(h.test.db, 'viewer@fatigue.test');
    await h.test.db.query(`insert into org_members (org_id, user_id, role) values ($1, $2, 'viewer')`, [h.orgId, viewer]);
    const seen = await asUser(h.test.db, viewer, async (tx) => {
      const count = async (table: string) => (await tx.query<{ n: number }>(`select count(*)::int as n from public.${table}`)).rows[0]!.n;
      return {
        verdicts: await count('fatigue_verdicts'),
        days: await count('fatigue_days'),
        write: await attempt(tx, `update public.fatigue_verdicts set status = 'healthy'`),
        insert: await attempt(tx, `insert into public.fatigue_creatives (org_id, campaign_id, creative_id) values ($1, $2, 'x')`, [h.orgId, campaignA]),
      };
    });
    expect(seen.verdicts).toBe((await counts()).verdicts);
    expect(seen.days).toBeGreaterThan(0);
    expect(seen.write.rowCount).toBe(0);
    expect(seen.insert.code).toBe('42501');
    const stranger = await createAuthUser(h.test.db, 'stranger@fatigue.test');
    expect(await asUser(h.test.db, stranger, async (tx) => (await tx.query<{ n: number }>('select count(*)::int as n from public.fatigue_verdicts')).rows[0]!.n)).toBe(0);
  });
});
