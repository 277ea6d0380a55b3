import { cp, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApiKey, createCampaign, createOrganization } from '../../core/admin.ts';
import { KeyCache, supabaseKeyStore } from '../../core/auth.ts';
import { migrate, MIGRATIONS_DIR } from '../../core/db/migrate.ts';
import type { Queryable } from '../../core/db/port.ts';
import { supabaseServiceClient } from '../../core/db/supabase-client.ts';
import { supabaseFatigueReader } from '../../core/fatigue-query.ts';
import { createApp } from '../../functions/app.ts';
import type { Services } from '../../functions/env.ts';
import { runCreativeFatigue } from '../../scheduled/jobs/creative-fatigue.ts';
import { exposureCurve } from '../../scheduled/fatigue/detector.ts';
import { runRollup } from '../../scheduled/jobs/rollup.ts';
import { asUser, attempt, BACKEND, createEmptyDatabase } from '../helpers/database.ts';
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

const HOUR = 3_600_000;
/** The start of the exposure plan: five days ago, 01:00 UTC. */
const EXPOSED = today - 5 * DAY + HOUR;
/** Clicks at the 1st … 6th exposure in the exposure plan: about 20 % × 0.7^(k−1) of the users with a k-th impression. */
const CLICKS_AT = [60, 35, 20, 10, 5, 2];
const GOOGLEBOT = 'Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)';

/**
 * e1 in campaign E, through the batch API:
 * - u0 … u299: user i sees 1 + i % 6 impressions, 3 hours apart; of the users with a k-th
 *   impression, the first CLICKS_AT[k − 1] click a minute after it;
 * - heavy: 25 impressions 10 minutes apart, a click after the 22nd ("20+");
 * - early: a click an hour before their only impression (exposure 0);
 * - a bot (Googlebot's user agent) with 5 impressions and 5 clicks, and 50 impressions and 5
 *   clicks without a user key: in the metrics, not in the curve.
 * Keyed, non-bot: 302 users, 1,076 impressions.
 */
function exposurePlan(campaignId: string): object[] {
  const events: object[] = [];
  const event = (id: string, type: string, at: number, extra: object = {}) =>
    events.push({ event_id: `e1-${id}`, type, campaign_id: campaignId, creative_id: 'e1', occurred_at: at, ...extra });
  const clicked = [0, 0, 0, 0, 0, 0];
  for (let i = 0; i < 300; i += 1) {
    for (let k = 1; k <= 1 + (i % 6); k += 1) {
      const at = EXPOSED + (k - 1) * 3 * HOUR + i * 20_000;
      event(`u${i}-i${k}`, 'impression', at, { user_key: `u${i}` });
      if (clicked[k - 1]! < CLICKS_AT[k - 1]!) {
        clicked[k - 1]! += 1;
        event(`u${i}-c${k}`, 'click', at + 60_000, { user_key: `u${i}` });
      }
    }
  }
  for (let j = 1; j <= 25; j += 1) event(`heavy-i${j}`, 'impression', EXPOSED + j * 600_000, { user_key: 'heavy' });
  event('heavy-c', 'click', EXPOSED + 22 * 600_000 + 60_000, { user_key: 'heavy' });
  event('early-c', 'click', EXPOSED, { user_key: 'early' });
  event('early-i', 'impression', EXPOSED + 2 * HOUR, { user_key: 'early' });
  for (let j = 0; j < 5; j += 1) {
    event(`bot-i${j}`, 'impression', EXPOSED + j * HOUR, { user_key: 'bot', context: { user_agent: GOOGLEBOT } });
    event(`bot-c${j}`, 'click', EXPOSED + j * HOUR + 60_000, { user_key: 'bot', context: { user_agent: GOOGLEBOT } });
    event(`anon-c${j}`, 'click', EXPOSED + j * HOUR + 60_000);
  }
  for (let j = 0; j < 50; j += 1) event(`anon-i${j}`, 'impression', EXPOSED + j * 60_000);
  return events;
}

/**
 * The watermarks take a transaction once none older is running (an autovacuum's ANALYZE holds
 * one back on Postgres for a moment): wait for that, so that one run sees every event.
 */
async function settled(db: Queryable) {
  for (let i = 0; i < 200; i += 1) {
    const { rows } = await db.query<{ settled: boolean }>('select pg_snapshot_xmin(pg_current_snapshot()) > (select max(ingest_xid) from events) as settled');
    if (rows[0]!.settled) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** The exposure cells computed from scratch from the log: each impression numbered among its user's, each click at the count before it. */
async function cellsFromScratch(db: Queryable, orgId: string, campaignId: string, creativeId: string) {
  const { rows } = await db.query<{ exposure: number; impressions: number; clicks: number }>(
    `with e as (
       select type, user_key, occurred_at, event_id from events
       where org_id = $1 and campaign_id = $2 and creative_id = $3 and type in ('impression', 'click')
         and nullif(user_key, '') is not null and not coalesce((context ->> 'bot')::boolean, false)),
     numbered as (
       select least(20, row_number() over (partition by user_key order by occurred_at, event_id))::int as k, 1 as imps, 0 as clicks
       from e where type = 'impression'
       union all
       select least(20, (select count(*) from e i where i.type = 'impression' and i.user_key = c.user_key and i.occurred_at <= c.occurred_at))::int, 0, 1
       from e c where c.type = 'click')
     select k as exposure, sum(imps)::int as impressions, sum(clicks)::int as clicks from numbered group by k order by k`,
    [orgId, campaignId, creativeId],
  );
  return rows;
}

// Events → rollup → creative-fatigue job → API, on 30 days (ago(30) … ago(1)):
//   campaign A (min_impressions 1,000): a1…a4 at 200 impressions and 20 clicks a day; a1 loses
//     half its clicks over the last 10 days (fatigued); a5 shows 10 impressions a day, a click
//     every third day (insufficient_data; sent through the batch API).
//   campaign B: b1…b3 at the same volume, all three lose half over the last 10 days (market_shift).
//   campaign C: bad settings (fatigue.min_drop 2): held back and reported.
//   campaign E: e1 seen by users with keys, for the exposure curve (`exposurePlan`), through the
//     batch API.
//   another organization's campaign: 404.
describe(`creative fatigue (${BACKEND})`, () => {
  let h: IngestHarness;
  let readKey: string;
  let campaignA: string;
  let campaignB: string;
  let campaignC: string;
  let campaignE: string;
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
    await settled(h.test.db);
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
  const send = async (events: object[]) => {
    for (let i = 0; i < events.length; i += 500) {
      const response = await h.app.request('/v1/events', {
        method: 'POST',
        headers: { authorization: `Bearer ${h.ingestKey}` },
        body: JSON.stringify({ events: events.slice(i, i + 500) }),
      });
      expect(response.status).toBe(202);
    }
  };
  const scratchCells = (campaignId: string, creativeId: string) => cellsFromScratch(h.test.db, h.orgId, campaignId, creativeId);
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
    campaignE = (await createCampaign(h.test.db, { orgId: h.orgId, name: 'E' })).id;
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
    await send(exposurePlan(campaignE));
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

  it('serves the exposure curve: CTR at each exposure of a user, with the fitted decay', async () => {
    const { status, body } = await get('/v1/fatigue/e1', { campaign_id: campaignE });
    expect(status).toBe(200);
    const { points, fit, halfLifeExposure, reason, clicksBeforeFirstImpression, frequency } = body.exposure;
    // users with a k-th impression: 50 per count 1 … 6, plus heavy (and early at 1)
    expect(points.slice(0, 7).map((p: any) => [p.exposure, p.impressions, p.clicks])).toEqual([
      [1, 302, 60], [2, 251, 35], [3, 201, 20], [4, 151, 10], [5, 101, 5], [6, 51, 2], [7, 1, 0],
    ]);
    expect(points.at(-1)).toMatchObject({ exposure: 20, impressions: 6, clicks: 1, open: true });
    expect(points).toHaveLength(20);
    expect(points.map((p: any) => [p.exposure, p.impressions, p.clicks])).toEqual(
      (await scratchCells(campaignE, 'e1')).filter((c) => c.exposure >= 1).map((c) => [c.exposure, c.impressions, c.clicks]),
    );
    expect(clicksBeforeFirstImpression).toBe(1);
    expect(points[0].ctr).toBeCloseTo(60 / 302, 12);
    // the fit is the detector's, on exposures 1 … 19 (the open "20+" left out)
    const expected = exposureCurve(points.slice(0, 19).map(({ exposure, impressions, clicks }: any) => ({ exposure, impressions, clicks })));
    expect(fit).toEqual(JSON.parse(JSON.stringify(expected.fit)));
    expect(fit.factorPerExposure.estimate).toBeGreaterThan(0.55);
    expect(fit.factorPerExposure.estimate).toBeLessThan(0.8);
    expect(halfLifeExposure).toBeGreaterThan(2);
    expect(halfLifeExposure).toBeLessThan(4);
    expect(fit.halfLifeInterval.low).toBeLessThan(halfLifeExposure);
    expect(fit.halfLifeInterval.high).toBeGreaterThan(halfLifeExposure);
    expect(reason).toBeNull();
    expect(frequency).toEqual({ users: 302, impressions: 1076, perUser: 1076 / 302, over: 'lifetime' });

    // the metrics count every non-bot impression, keyed or not
    const metrics = await get('/v1/metrics', {
      metric: 'impressions', entity_type: 'creative', entity_id: 'e1', granularity: 'day', from: ago(5), to: ago(3), tz: 'UTC',
    });
    expect(metrics.body.data.reduce((sum: number, p: any) => sum + (p.value ?? 0), 0)).toBe(1076 + 50);

    // no user keys: no curve, and why
    const a1 = (await get('/v1/fatigue/a1', { campaign_id: campaignA })).body.exposure;
    expect(a1).toMatchObject({ points: [], fit: null, halfLifeExposure: null, frequency: null, clicksBeforeFirstImpression: 0 });
    expect(a1.reason).toMatch(/^not enough data/);
  });

  it('gives each creative\u2019s frequency in the evidence where users have keys', async () => {
    const e = await verdicts(campaignE);
    expect(e.e1.evidence.frequency).toEqual({ users: 302, impressions: 1076, perUser: 1076 / 302, over: 'lifetime' });
    expect(e.e1.status).toBe('insufficient_data');
    const a = await verdicts(campaignA);
    expect(a.a1.evidence.frequency).toBeNull();
    expect(a.a1.status).toBe('fatigued');
  });

  it('sums local days of a time zone from the 15-minute points, each with the verdict known at its end', async () => {
    // Kathmandu is UTC+05:45: local day D is [D−1 18:15, D 18:15) UTC, so its verdict is D−1's
    const { status, body } = await get('/v1/fatigue/a1', { campaign_id: campaignA, tz: 'Asia/Kathmandu' });
    expect(status).toBe(200);
    expect(body.meta.tz).toBe('Asia/Kathmandu');
    const byDay = Object.fromEntries(body.data.map((row: any) => [row.day, row]));
    // the first local day holds UTC ago(30)'s first 18¼ hours: 152 of its 200 impressions, 15 of its 20 clicks; no verdict yet
    expect(body.data[0]).toMatchObject({ day: ago(30), impressions: 152, clicks: 15, scored_day: ago(31), status: null, baseline: null });
    // ago(10), the first day at half the clicks: 7 of its 10 clicks, and 5 of ago(11)'s 20
    expect(byDay[ago(10)]).toMatchObject({ impressions: 200, clicks: 12, scored_day: ago(11) });
    const utc = Object.fromEntries((await get('/v1/fatigue/a1', { campaign_id: campaignA })).body.data.map((row: any) => [row.day, row]));
    expect(byDay[ago(10)].status).toBe(utc[ago(11)].status);
    expect(byDay[ago(10)].statistic).toBe(utc[ago(11)].statistic);
    for (const row of body.data) expect(row.scored_day).toBe(new Date(Date.parse(row.day) - DAY).toISOString().slice(0, 10));
    // the same local days as GET /v1/metrics sums
    const metrics = await get('/v1/metrics', {
      metric: 'impressions,clicks', entity_type: 'creative', entity_id: 'a1', granularity: 'day', from: ago(30), to: body.data.at(-1).day, tz: 'Asia/Kathmandu',
    });
    for (const point of metrics.body.data) {
      expect([point.bucket.slice(0, 10), point.metric, point.value]).toEqual([point.bucket.slice(0, 10), point.metric, byDay[point.bucket.slice(0, 10)][point.metric]]);
    }
    // west of UTC, local day D ends after UTC day D: its verdict is D's
    const west = await get('/v1/fatigue/a1', { campaign_id: campaignA, tz: 'America/New_York' });
    expect(west.body.data.every((row: any) => row.scored_day === row.day)).toBe(true);
    expect(west.body.data.at(-1).day <= ago(1)).toBe(true);
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
    for (const tz of ['Mars/Olympus_Mons', '+05:30', 'CET', '']) {
      const answer = await get('/v1/fatigue/a1', { campaign_id: campaignA, tz });
      expect([tz, answer.status, answer.body.error.details.field]).toEqual([tz, 400, 'tz']);
    }
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
    expect(rerun).toMatchObject({ unchanged: 3, days_stepped: 0, events: 0, restepped: [] });
    expect(await counts()).toEqual(before);
  });

  it('reads the same counts a campaign at a time as an organization at once', async () => {
    // an organization too large to read at once is read per campaign: the counts stored from the
    // organization's read must equal them, or the run would re-step
    const before = await counts();
    const rerun = (await runCreativeFatigue(h.test.db, {}, { orgReadCreatives: 0 })) as Record<string, any>;
    expect(rerun).toMatchObject({ unchanged: 3, days_stepped: 0, restepped: [] });
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
    expect(late.unchanged).toBe(2);
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

  it('numbers late events exactly: a late impression moves the clicks after it up a cell', async () => {
    const late = [
      // early's click (exposure 0) gets an impression before it: exposure 1
      { event_id: 'e1-early-late', type: 'impression', user_key: 'early', occurred_at: EXPOSED - HOUR },
      // u100 (5 impressions, clicks at some) gets one before all of them: each click moves up one
      { event_id: 'e1-u100-late', type: 'impression', user_key: 'u100', occurred_at: EXPOSED - 3 * HOUR },
      // u7 clicks again between its 1st and 2nd impression: exposure 1
      { event_id: 'e1-u7-late', type: 'click', user_key: 'u7', occurred_at: EXPOSED + HOUR },
      // heavy gets one more impression before its click: still "20+"
      { event_id: 'e1-heavy-late', type: 'impression', user_key: 'heavy', occurred_at: EXPOSED },
    ].map((event) => ({ ...event, campaign_id: campaignE, creative_id: 'e1' }));
    const before = (await get('/v1/fatigue/e1', { campaign_id: campaignE })).body.exposure;
    await send(late);
    const run = await job();
    expect(run.exposure_users).toBe(4);
    const after = (await get('/v1/fatigue/e1', { campaign_id: campaignE })).body.exposure;
    expect(after.clicksBeforeFirstImpression).toBe(0);
    expect(after.points.map((p: any) => [p.exposure, p.impressions, p.clicks])).toEqual(
      (await scratchCells(campaignE, 'e1')).filter((c) => c.exposure >= 1).map((c) => [c.exposure, c.impressions, c.clicks]),
    );
    const total = (curve: any) => curve.points.reduce((sum: number, p: any) => sum + p.clicks, 0) + curve.clicksBeforeFirstImpression;
    expect(total(after)).toBe(total(before) + 1);
    expect(after.frequency).toMatchObject({ users: 302, impressions: 1079 });
    expect(after.points.at(-1)).toMatchObject({ exposure: 20, impressions: 7, clicks: 1 });
    // and the stored rows agree with a fold of everything at once
    const { rows } = await h.test.db.query<{ users: number; cells: number }>(
      `select (select count(*)::int from fatigue_exposure_users where org_id = $1 and campaign_id = $2) as users,
              (select count(*)::int from fatigue_exposure_cells where org_id = $1 and campaign_id = $2) as cells`,
      [h.orgId, campaignE],
    );
    expect(rows[0]).toEqual({ users: 302, cells: 21 });
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
        ['/v1/fatigue/a1', { campaign_id: campaignA, tz: 'Asia/Kathmandu' }],
        ['/v1/fatigue/e1', { campaign_id: campaignE }],
        ['/v1/fatigue', { campaign_id: campaignE }],
        ['/v1/fatigue/a1', { campaign_id: campaignA, tz: 'Nowhere/Land' }],
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

// A database that ran the creative-fatigue job before the exposure counts existed: migration
// 20261126110000 folds in, once, the events the job's watermark had already passed; the job's
// next step folds the rest; together they are the counts from scratch.
describe(`creative fatigue exposure backfill (${BACKEND})`, () => {
  it('counts the events from before the migration once, and those after it by the next step', async () => {
    const test = await createEmptyDatabase();
    const dir = await mkdtemp(path.join(tmpdir(), 'precise-migrations-'));
    try {
      await cp(MIGRATIONS_DIR, dir, { recursive: true, filter: (source) => !source.endsWith('20261126110000_fatigue_exposures.sql') });
      await migrate(test.db, { dir });
      const org = await createOrganization(test.db, { name: 'Backfill Co' });
      const campaignId = (await createCampaign(test.db, { orgId: org.id, name: 'Old' })).id;
      const insert = (tag: string, rows: Array<[string, string, number]>) =>
        test.db.query(
          `insert into events (org_id, event_id, type, occurred_at, campaign_id, creative_id, user_key)
           select $1, $2 || '-' || ordinality, r ->> 0, now() - (r ->> 2)::int * interval '1 minute', $3, 'old1', r ->> 1
           from jsonb_array_elements($4::jsonb) with ordinality as x(r, ordinality)`,
          [org.id, tag, campaignId, JSON.stringify(rows)],
        );
      // before: v1 sees two impressions and clicks after the second; v2 clicks before any impression
      await insert('before', [['impression', 'v1', 50], ['impression', 'v1', 40], ['click', 'v1', 39], ['click', 'v2', 30]]);
      await settled(test.db);
      const { rows: stepped } = await test.db.query<{ result: any }>('select private.fatigue_map_step() as result');
      expect(stepped[0]!.result).toMatchObject({ skipped: false, new_creatives: 1 });
      // after the watermark: v2's impression, later than its click; v1's third impression, before its click
      await insert('after', [['impression', 'v2', 20], ['impression', 'v1', 45]]);

      await cp(path.join(MIGRATIONS_DIR, '20261126110000_fatigue_exposures.sql'), path.join(dir, '20261126110000_fatigue_exposures.sql'));
      expect((await migrate(test.db, { dir })).applied).toEqual(['20261126110000']);
      await settled(test.db);
      const cells = async () =>
        (
          await test.db.query<{ exposure: number; impressions: number; clicks: number }>(
            'select exposure, impressions::int, clicks::int from fatigue_exposure_cells where impressions <> 0 or clicks <> 0 order by exposure',
          )
        ).rows;
      // the backfill: the events before the watermark only
      expect(await cells()).toEqual([
        { exposure: 0, impressions: 0, clicks: 1 },
        { exposure: 1, impressions: 1, clicks: 0 },
        { exposure: 2, impressions: 1, clicks: 1 },
      ]);
      const { rows: next } = await test.db.query<{ result: any }>('select private.fatigue_map_step() as result');
      expect(next[0]!.result).toMatchObject({ skipped: false, exposure_users: 2 });
      const scratch = await cellsFromScratch(test.db, org.id, campaignId, 'old1');
      expect(scratch).toEqual([
        { exposure: 0, impressions: 0, clicks: 1 },
        { exposure: 1, impressions: 2, clicks: 0 },
        { exposure: 2, impressions: 1, clicks: 0 },
        { exposure: 3, impressions: 1, clicks: 1 },
      ]);
      // v1's click moved from 2 to 3; v2's stays before its (later) impression: exposure 0
      expect(await cells()).toEqual(scratch);
    } finally {
      await test.drop();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
