import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createOrganization } from '../../core/admin.ts';
import type { CanonicalEvent } from '../../core/events/canonical.ts';
import { sqlEventWriter } from '../../core/ingest/writer.ts';
import { runRollup } from '../../scheduled/jobs/rollup.ts';
import { BACKEND, createTestDatabase, holdRollupLock, type TestDatabase } from '../helpers/database.ts';
import { canonicalEvent } from '../helpers/events.ts';
import { ownEntities } from '../helpers/seed.ts';

describe(`rollup of events into 15-minute metrics (${BACKEND})`, () => {
  let test: TestDatabase;
  let orgId: string;
  const campaignId = randomUUID();
  const assetId = randomUUID();
  const event = (at: Date, overrides: Partial<CanonicalEvent> = {}) =>
    canonicalEvent(orgId, randomUUID(), {
      occurred_at: at.toISOString(),
      campaign_id: campaignId,
      creative_id: 'crv-1',
      context: { source: 'test', geo: { country: 'NP' }, device: { type: 'mobile' }, bot: false },
      ...overrides,
    });
  const write = (events: CanonicalEvent[]) => sqlEventWriter(test.db).write({ events, failures: [] });
  const rollup = () => runRollup(test.db) as Promise<{ events: number; buckets: number; rows: number; skipped: boolean }>;
  const metric = async (name: string, entityType = 'organization', from?: Date, to?: Date) => {
    const { rows } = await test.db.query<{ total: string | null }>(
      `select sum(value)::text as total from metrics
       where org_id = $1 and metric = $2 and entity_type = $3 and granularity = '15m'
         and ($4::timestamptz is null or bucket_start >= $4) and ($5::timestamptz is null or bucket_start < $5)`,
      [orgId, name, entityType, from ?? null, to ?? null],
    );
    return Number(rows[0]!.total ?? 0);
  };
  const snapshot = async () =>
    (
      await test.db.query<{ row: string }>(
        `select concat_ws('|', metric, entity_type, entity_id, bucket_start, dimensions::text, value::text) as row
         from metrics where org_id = $1 order by 1`,
        [orgId],
      )
    ).rows.map((r) => r.row);

  beforeAll(async () => {
    test = await createTestDatabase();
    orgId = (await createOrganization(test.db, { name: 'Rollup Co' })).id;
    await ownEntities(test.db, orgId, { campaigns: [campaignId], assets: [assetId] });
  });
  afterAll(() => test?.drop());

  it('gives exact daily totals in Asia/Kathmandu and in America/New_York across a daylight-saving change', async () => {
    // every 7 minutes from 2026-03-06 to 2026-03-11 UTC; New York springs forward on 2026-03-08
    const start = Date.parse('2026-03-06T00:00:00Z');
    const events: CanonicalEvent[] = [];
    for (let t = start, i = 0; t < Date.parse('2026-03-11T00:00:00Z'); t += 7 * 60_000, i += 1) {
      events.push(event(new Date(t), { type: i % 5 === 0 ? 'click' : 'impression' }));
    }
    for (let i = 0; i < events.length; i += 500) await write(events.slice(i, i + 500));
    const result = await rollup();
    expect(result.events).toBe(events.length);

    for (const timeZone of ['Asia/Kathmandu', 'America/New_York']) {
      const expected = new Map<string, number>();
      for (const e of events.filter((x) => x.type === 'impression')) {
        const day = new Date(e.occurred_at).toLocaleDateString('en-CA', { timeZone });
        expected.set(day, (expected.get(day) ?? 0) + 1);
      }
      const { rows } = await test.db.query<{ day: string; total: string }>(
        `select to_char((bucket_start at time zone $2)::date, 'YYYY-MM-DD') as day, sum(value)::text as total
         from metrics where org_id = $1 and metric = 'impressions' and entity_type = 'organization'
         group by 1 order by 1`,
        [orgId, timeZone],
      );
      expect(Object.fromEntries(rows.map((r) => [r.day, Number(r.total)]))).toEqual(Object.fromEntries([...expected].sort()));
    }
    // the New York day of the change has 23 hours, and its total shows it
    const { rows } = await test.db.query<{ total: string }>(
      `select sum(value)::text as total from metrics
       where org_id = $1 and metric = 'impressions' and entity_type = 'organization'
         and (bucket_start at time zone 'America/New_York')::date = '2026-03-08'`,
      [orgId],
    );
    const nyChangeDay = events.filter((e) => e.type === 'impression' && new Date(e.occurred_at).toLocaleDateString('en-CA', { timeZone: 'America/New_York' }) === '2026-03-08');
    expect(Number(rows[0]!.total)).toBe(nyChangeDay.length);
    expect(nyChangeDay.length).toBeLessThan(events.filter((e) => e.type === 'impression').length / 5);
  });

  it('is idempotent: a rerun, or a recompute of the whole range, leaves the same rows', async () => {
    const before = await snapshot();
    expect(before.length).toBeGreaterThan(100);
    expect((await rollup()).events).toBe(0);
    expect(await snapshot()).toEqual(before);
    const days: number[] = [];
    const backfill = await runRollup(test.db, { from: '2026-03-01T00:00:00Z', to: '2026-03-15T00:00:00Z' }, ({ done }) => days.push(done));
    expect(backfill).toMatchObject({ days: 14 });
    expect(days).toEqual(Array.from({ length: 14 }, (_, i) => i + 1));
    expect(await snapshot()).toEqual(before);
    // a range cut inside buckets is widened to whole buckets: nothing counted twice or lost
    const cut = await test.db.query<{ result: { from: string; to: string } }>(
      `select private.rollup_metrics_between('2026-03-07T10:07:00Z', '2026-03-07T11:07:00Z') as result`,
    );
    expect([new Date(cut.rows[0]!.result.from).toISOString(), new Date(cut.rows[0]!.result.to).toISOString()]).toEqual([
      '2026-03-07T10:00:00.000Z',
      '2026-03-07T11:15:00.000Z',
    ]);
    expect(await snapshot()).toEqual(before);
  });

  it('folds a late event into its old bucket on the next run', async () => {
    const bucket = new Date('2026-03-07T10:15:00Z');
    const before = await metric('impressions', 'organization', bucket, new Date(bucket.getTime() + 15 * 60_000));
    await write([event(new Date('2026-03-07T10:20:00Z'))]);
    const result = await rollup();
    expect(result).toMatchObject({ events: 1, buckets: 1 });
    expect(await metric('impressions', 'organization', bucket, new Date(bucket.getTime() + 15 * 60_000))).toBe(before + 1);
  });

  it('counts per campaign, creative and data asset, with dimensions, bots apart', async () => {
    const at = new Date('2026-03-12T08:00:00Z');
    await write([
      event(at, { asset_ids: [assetId], type: 'data_usage' }),
      event(at, { context: { source: 'test', bot: true, device: { type: 'bot' } } }),
      event(at, { creative_id: 'crv-2', context: { source: 'test', geo: { country: 'DE' }, device: { type: 'desktop' }, bot: false } }),
      event(at, { type: 'spend', value: 12.5, currency: 'EUR' }),
      event(at, { type: 'spend', value: 7.5, currency: 'EUR' }),
    ]);
    await rollup();
    const day = [at, new Date(at.getTime() + 3_600_000)] as const;
    expect(await metric('bot_impressions', 'organization', ...day)).toBe(1);
    expect(await metric('impressions', 'organization', ...day)).toBe(1);
    expect(await metric('data_usage', 'data_asset', ...day)).toBe(1);
    expect(await metric('spend', 'campaign', ...day)).toBe(20);
    const { rows } = await test.db.query<{ entity_id: string; dimensions: object; value: string }>(
      `select entity_id, dimensions, value::text from metrics
       where org_id = $1 and metric = 'impressions' and entity_type = 'creative' and bucket_start = $2`,
      [orgId, at],
    );
    expect(rows).toEqual([{ entity_id: 'crv-2', dimensions: { country: 'DE', device_type: 'desktop' }, value: '1' }]);
    const spend = await test.db.query<{ dimensions: object }>(
      `select dimensions from metrics where org_id = $1 and metric = 'spend' and entity_type = 'organization' and bucket_start = $2`,
      [orgId, at],
    );
    expect(spend.rows).toEqual([{ dimensions: { country: 'NP', device_type: 'mobile', currency: 'EUR' } }]);
  });

  it('moves a conversion out of the approved counters when it is rejected later', async () => {
    const first = new Date('2026-03-13T09:05:00Z');
    const bucket = [new Date('2026-03-13T09:00:00Z'), new Date('2026-03-13T09:15:00Z')] as const;
    const conversion = (status: string, at: Date) =>
      event(at, { type: 'conversion', click_id: 'clk-r', status, value: 40, currency: 'USD', properties: { txid: 'order-r' } });
    await write([conversion('pending', first)]);
    await rollup();
    expect(await metric('conversions', 'organization', ...bucket)).toBe(0);
    await write([conversion('approved', new Date('2026-03-13T12:00:00Z'))]);
    await rollup();
    expect(await metric('conversions', 'organization', ...bucket)).toBe(1);
    expect(await metric('conversion_value', 'campaign', ...bucket)).toBe(40);
    await write([conversion('rejected', new Date('2026-03-20T08:00:00Z'))]);
    await rollup();
    expect(await metric('conversions', 'organization', ...bucket)).toBe(0);
    expect(await metric('conversion_value', 'organization', ...bucket)).toBe(0);
    expect(await metric('conversions', 'organization')).toBe(0);
  });

  it('moves a conversion to the bucket of an earlier event of it that arrives late', async () => {
    const conversion = (at: Date) =>
      event(at, { type: 'conversion', click_id: 'clk-early', value: 15, currency: 'USD', properties: { txid: 'order-early' } });
    const later = [new Date('2026-03-16T12:00:00Z'), new Date('2026-03-16T12:15:00Z')] as const;
    const earlier = [new Date('2026-03-16T08:00:00Z'), new Date('2026-03-16T08:15:00Z')] as const;
    await write([conversion(new Date('2026-03-16T12:05:00Z'))]);
    await rollup();
    expect(await metric('conversions', 'organization', ...later)).toBe(1);
    await write([conversion(new Date('2026-03-16T08:10:00Z'))]);
    await rollup();
    expect(await metric('conversions', 'organization', ...later)).toBe(0);
    expect(await metric('conversions', 'organization', ...earlier)).toBe(1);
    expect(await metric('conversion_value', 'creative', ...earlier)).toBe(15);
    // the emptied bucket keeps no zero rows: a recompute would write none either
    const zeros = await test.db.query<{ n: number }>('select count(*)::int as n from metric_points where value = 0');
    expect(zeros.rows[0]!.n).toBe(0);
  });

  it('folds incrementally to exactly what a recompute from the log gives, over a mixed history', async () => {
    const mixedOrg = (await createOrganization(test.db, { name: 'Mixed History Co' })).id;
    const random = seededRandom(20261124);
    const pick = <T,>(items: readonly T[]) => items[Math.floor(random() * items.length)]!;
    const campaigns = [randomUUID(), randomUUID(), randomUUID()];
    const assets = [randomUUID(), randomUUID()];
    await ownEntities(test.db, mixedOrg, { campaigns, assets });
    const start = Date.parse('2026-04-10T00:00:00Z');
    const expected = { impressions: 0, bot_impressions: 0, clicks: 0, data_usage: 0, spend: 0 };
    const conversions = new Map<string, { status: string | null; value: number | null }>();
    for (let round = 0; round < 6; round += 1) {
      const received = new Date(start + 3 * 86_400_000 + round * 60_000).toISOString();
      const touchedKeys = new Set<string>();
      const batch: CanonicalEvent[] = [];
      for (let i = 0; i < 150; i += 1) {
        const bot = random() < 0.1;
        const base = {
          occurred_at: new Date(start + Math.floor(random() * 2 * 86_400_000)).toISOString(),
          received_at: received,
          campaign_id: pick(campaigns),
          creative_id: random() < 0.2 ? null : `crv-${Math.floor(random() * 5)}`,
          asset_ids: random() < 0.3 ? [pick(assets)] : [],
          context: { source: 'test', bot, geo: { country: pick(['NP', 'DE', 'US']) }, device: { type: pick(['mobile', 'desktop']) } },
        };
        const kind = random();
        if (kind < 0.5) {
          batch.push(canonicalEvent(mixedOrg, randomUUID(), { ...base, type: 'impression' }));
          expected[bot ? 'bot_impressions' : 'impressions'] += 1;
        } else if (kind < 0.65) {
          batch.push(canonicalEvent(mixedOrg, randomUUID(), { ...base, type: 'click' }));
          if (!bot) expected.clicks += 1;
        } else if (kind < 0.72) {
          batch.push(canonicalEvent(mixedOrg, randomUUID(), { ...base, type: 'data_usage', asset_ids: [pick(assets)] }));
          if (!bot) expected.data_usage += 1;
        } else if (kind < 0.8) {
          const value = Math.round(random() * 1000) / 100;
          batch.push(canonicalEvent(mixedOrg, randomUUID(), { ...base, type: 'spend', value, currency: 'USD' }));
          expected.spend += value;
        } else {
          // a conversion: one of a few keyed ones (status changes, earlier events arriving late) or a lone one
          const keyed = random() < 0.7;
          const key = keyed ? `k${Math.floor(random() * 12)}` : randomUUID();
          if (touchedKeys.has(key)) continue; // one event per conversion and batch: "latest" stays unambiguous
          touchedKeys.add(key);
          const status = pick(['approved', 'pending', 'rejected', null] as const);
          const value = random() < 0.6 ? Math.round(random() * 5000) / 100 : null;
          batch.push(
            canonicalEvent(mixedOrg, randomUUID(), {
              ...base,
              type: 'conversion',
              status,
              value,
              currency: value === null ? null : 'USD',
              click_id: keyed ? `clk-${key}` : null,
              properties: keyed ? { txid: `tx-${key}` } : {},
            }),
          );
          const known = conversions.get(key);
          conversions.set(key, { status, value: value ?? known?.value ?? null });
        }
      }
      await write(batch);
      await rollup();
    }

    const mixedMetric = async (name: string) => {
      const { rows } = await test.db.query<{ total: string | null }>(
        `select sum(value)::text as total from metrics where org_id = $1 and metric = $2 and entity_type = 'organization'`,
        [mixedOrg, name],
      );
      return Number(rows[0]!.total ?? 0);
    };
    for (const [name, total] of Object.entries(expected)) {
      expect({ name, total: await mixedMetric(name) }).toEqual({ name, total: name === 'spend' ? expect.closeTo(total, 6) : total });
    }
    const approved = [...conversions.values()].filter((c) => c.status === null || c.status === 'approved');
    expect(approved.length).toBeGreaterThan(3);
    expect(approved.length).toBeLessThan(conversions.size);
    expect(await mixedMetric('conversions')).toBe(approved.length);
    expect(await mixedMetric('conversion_value')).toBeCloseTo(approved.reduce((sum, c) => sum + (c.value ?? 0), 0), 6);

    const everything = async () =>
      (
        await test.db.query<{ row: string }>(
          `select concat_ws('|', metric, entity_type, entity_id, bucket_start, dimensions::text, value::text) as row
           from metrics where org_id = $1 order by 1`,
          [mixedOrg],
        )
      ).rows.map((r) => r.row);
    const folded = await everything();
    expect(folded.length).toBeGreaterThan(500);
    await runRollup(test.db, { from: '2026-04-09T00:00:00Z', to: '2026-04-13T00:00:00Z' });
    expect(await everything()).toEqual(folded);
  });

  it('misses and doubles nothing while inserts race the rollup', async () => {
    const base = Date.parse('2026-03-14T00:00:00Z');
    const before = await metric('impressions', 'organization');
    let written = 0;
    const writers = Array.from({ length: 4 }, async (_, w) => {
      for (let round = 0; round < 10; round += 1) {
        const batch = Array.from({ length: 50 }, (_, i) => event(new Date(base + (w * 1000 + round * 50 + i) * 60_000)));
        await write(batch);
        written += batch.length;
      }
    });
    const rollups = (async () => {
      for (let i = 0; i < 10; i += 1) await rollup();
    })();
    await Promise.all([...writers, rollups]);
    await rollup();
    expect(await metric('impressions', 'organization')).toBe(before + written);
  });

  if (BACKEND === 'postgres') {
    // Only a server with several connections can hold a transaction open across a rollup.
    it('counts an event whose transaction began before the watermark moved and committed after', async () => {
      const at = new Date('2026-03-15T06:00:00Z');
      let release!: () => void;
      const gate = new Promise<void>((resolve) => (release = resolve));
      let inserted!: () => void;
      const insertedSignal = new Promise<void>((resolve) => (inserted = resolve));
      const slow = test.db.transaction(async (tx) => {
        await tx.query('select public.ingest_events($1::text::jsonb)', [JSON.stringify({ events: [event(at)], failures: [] })]);
        inserted();
        await gate;
      });
      await insertedSignal;
      await rollup(); // runs while the insert is not yet committed
      expect(await metric('impressions', 'organization', at, new Date(at.getTime() + 900_000))).toBe(0);
      release();
      await slow;
      await rollup();
      expect(await metric('impressions', 'organization', at, new Date(at.getTime() + 900_000))).toBe(1);
    });

    it('never runs two rollups at once: a second one returns at once, skipped', async () => {
      // a rollup in progress elsewhere (another worker process) holds the lock until it commits
      const release = await holdRollupLock(test.db);
      expect(await rollup()).toMatchObject({ skipped: true });
      await release();
      expect(await rollup()).toMatchObject({ skipped: false });
    });
  }
});

/** A small deterministic generator (mulberry32), so a failure can be replayed. */
function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}
