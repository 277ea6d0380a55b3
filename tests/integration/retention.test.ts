import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCampaign, createOrganization } from '../../core/admin.ts';
import { sqlEventWriter } from '../../core/ingest/writer.ts';
import { LIMITS } from '../../core/events/limits.ts';
import { runAlertWebhooks } from '../../scheduled/jobs/alert-webhooks.ts';
import { runAttribution } from '../../scheduled/jobs/attribution.ts';
import { runCreativeFatigue } from '../../scheduled/jobs/creative-fatigue.ts';
import { applyRetention, partitionUpkeepJob } from '../../scheduled/jobs/partition-upkeep.ts';
import { runRollup } from '../../scheduled/jobs/rollup.ts';
import { BACKEND, createTestDatabase, holdInTransaction, holdRollupLock, sqlState, type TestDatabase } from '../helpers/database.ts';
import { canonicalEvent } from '../helpers/events.ts';

describe(`partitions and retention (${BACKEND})`, () => {
  let test: TestDatabase;
  let orgId: string;
  const day = (offset: number) => new Date(Date.now() + offset * 86_400_000);
  const partitions = async () =>
    (
      await test.db.query<{ name: string }>(
        `select c.relname as name from pg_inherits i join pg_class c on c.oid = i.inhrelid
         where i.inhparent = 'public.events'::regclass order by 1`,
      )
    ).rows.map((row) => row.name);
  const partitionOf = (date: Date) => `events_p${date.toISOString().slice(0, 10).replaceAll('-', '')}`;
  const pastDay = async (ago: number) => (await test.db.query<{ d: string }>(`select ((now() at time zone 'UTC')::date - $1::int)::text as d`, [ago])).rows[0]!.d;
  const drop = async (partition: string, cutoff: string, rollupWaitMs = 60_000) =>
    (
      await test.db.query<{ result: { status: string; waiting_for?: string[] } }>('select private.drop_event_partition($1, $2::date, 2000, $3) as result', [
        partition,
        cutoff,
        rollupWaitMs,
      ])
    ).rows[0]!.result;

  beforeAll(async () => {
    test = await createTestDatabase();
    orgId = (await createOrganization(test.db, { name: 'Retention Co' })).id;
    // 40 to 30 days ago, with events (client ids, so the dedup ledger has rows too)
    await test.db.query(`select private.ensure_event_partitions((now() at time zone 'UTC')::date - 40, (now() at time zone 'UTC')::date)`);
    const events = [40, 35, 31, 5, 0].map((ago) =>
      canonicalEvent(orgId, `ret-${ago}`, { id_source: 'client', occurred_at: day(-ago).toISOString() }),
    );
    await sqlEventWriter(test.db).write({ events, failures: [] });
    await runRollup(test.db);
  });
  afterAll(() => test?.drop());

  it('drops whole partitions older than the retention and keeps every metric', async () => {
    const metricsBefore = await test.db.query<{ total: string }>(`select sum(value)::text as total from metrics where org_id = $1 and metric = 'impressions'`, [orgId]);
    expect(Number(metricsBefore.rows[0]!.total)).toBe(5);
    expect(await partitions()).toContain(partitionOf(day(-40)));

    const result = await applyRetention(test.db, 30);
    expect(result.dropped).toContain(partitionOf(day(-40)));
    expect(result.dropped).toContain(partitionOf(day(-31)));
    expect(result.dropped).not.toContain(partitionOf(day(-30)));
    expect(result.deferred).toEqual([]);
    // the ledger keeps its entries: those events are younger than the accepted 400 days
    expect(result.ledger_rows_pruned).toBe(0);

    const left = await partitions();
    expect(left).not.toContain(partitionOf(day(-35)));
    expect(left).toContain(partitionOf(day(-5)));
    expect(left).toContain('events_default');
    const events = await test.db.query<{ event_id: string }>('select event_id from events where org_id = $1 order by 1', [orgId]);
    expect(events.rows.map((row) => row.event_id)).toEqual(['ret-0', 'ret-5']);
    const metricsAfter = await test.db.query<{ total: string }>(`select sum(value)::text as total from metrics where org_id = $1 and metric = 'impressions'`, [orgId]);
    expect(metricsAfter.rows[0]!.total).toBe(metricsBefore.rows[0]!.total);

    // the dropped days cannot be "rebuilt" into empty ones, and their metrics stay
    await expect(runRollup(test.db, { from: day(-40).toISOString(), to: day(-33).toISOString() })).rejects.toMatchObject({
      code: 'invalid_argument',
      details: { field: 'from' },
    });
    const metricsKept = await test.db.query<{ total: string }>(`select sum(value)::text as total from metrics where org_id = $1 and metric = 'impressions'`, [orgId]);
    expect(metricsKept.rows[0]!.total).toBe(metricsBefore.rows[0]!.total);
  });

  it('a resend of an event whose partition retention dropped is a duplicate, counted once', async () => {
    const total = async () =>
      Number(
        (await test.db.query<{ total: string }>(`select sum(value)::text as total from metrics where org_id = $1 and metric = 'impressions' and entity_type = 'organization'`, [orgId]))
          .rows[0]!.total,
      );
    const before = await total();
    expect(await partitions()).not.toContain(partitionOf(day(-40)));
    const resend = canonicalEvent(orgId, 'ret-40', { id_source: 'client', occurred_at: day(-40).toISOString() });
    const result = await sqlEventWriter(test.db).write({ events: [resend], failures: [] });
    expect(result.inserted).toBe(0);
    expect([...result.duplicates]).toEqual([`${orgId} ret-40`]);
    await runRollup(test.db);
    expect(await total()).toBe(before);
    const stored = await test.db.query('select 1 from events where org_id = $1 and event_id = $2', [orgId, 'ret-40']);
    expect(stored.rows).toHaveLength(0);
  });

  it('prunes the ledger only past the age of events still accepted, whatever the retention', async () => {
    const maxAge = await test.db.query<{ ms: string }>(`select (extract(epoch from private.event_max_age()) * 1000)::bigint::text as ms`);
    expect(Number(maxAge.rows[0]!.ms)).toBe(LIMITS.maxAgeMs);
    const claim = (id: string, daysAgo: number) =>
      test.db.query(`insert into event_ids (org_id, event_id, occurred_at) values ($1, $2, now() - $3 * interval '1 day')`, [orgId, id, daysAgo]);
    await claim('ledger-399', 399);
    await claim('ledger-403', 403);
    const pruned = await test.db.query<{ n: string }>(`select private.prune_event_id_ledger((now() at time zone 'UTC')::date - 1) as n`);
    expect(Number(pruned.rows[0]!.n)).toBe(1);
    const left = await test.db.query<{ event_id: string }>(`select event_id from event_ids where org_id = $1 and event_id like 'ledger-%'`, [orgId]);
    expect(left.rows.map((row) => row.event_id)).toEqual(['ledger-399']);
  });

  it('postpones a partition until every reader of the log has read it, naming the ones it waits for', async () => {
    // an old event arrives after every reader's step: a touch for attribution, a creative for fatigue
    const campaignId = (await createCampaign(test.db, { orgId, name: 'Late campaign' })).id;
    await sqlEventWriter(test.db).write({
      events: [canonicalEvent(orgId, 'ret-late-25', { id_source: 'client', occurred_at: day(-25).toISOString(), user_key: 'late-user', campaign_id: campaignId, creative_id: 'late-creative' })],
      failures: [],
    });
    const cutoff = await pastDay(10);
    const partition = partitionOf(day(-25));
    expect(await drop(partition, cutoff)).toEqual({
      partition, status: 'postponed', waiting_for: ['alert_webhooks', 'attribution', 'creative_fatigue', 'metrics_15m'],
    });
    await runRollup(test.db);
    expect(await drop(partition, cutoff)).toEqual({ partition, status: 'postponed', waiting_for: ['alert_webhooks', 'attribution', 'creative_fatigue'] });
    await runAttribution(test.db);
    expect(await drop(partition, cutoff)).toEqual({ partition, status: 'postponed', waiting_for: ['alert_webhooks', 'creative_fatigue'] });
    await runCreativeFatigue(test.db);
    expect(await drop(partition, cutoff)).toEqual({ partition, status: 'postponed', waiting_for: ['alert_webhooks'] });
    expect(await partitions()).toContain(partition);
    await runAlertWebhooks(test.db, { serverSecret: 'retention-test-server-secret-0123456789' });
    expect(await drop(partition, cutoff)).toEqual({ partition, status: 'dropped' });
    expect(await partitions()).not.toContain(partition);

    // each reader has what the dropped day held: its metric, its touch, its creative
    const late = await test.db.query<{ total: string }>(
      `select sum(value)::text as total from metrics where org_id = $1 and metric = 'impressions' and entity_type = 'organization'
         and bucket_start > $2::timestamptz - interval '15 minutes' and bucket_start <= $2`,
      [orgId, day(-25)],
    );
    expect(Number(late.rows[0]!.total)).toBe(1);
    const touch = await test.db.query('select 1 from attribution_touches where org_id = $1 and event_id = $2 and user_key = $3', [orgId, 'ret-late-25', 'late-user']);
    expect(touch.rows).toHaveLength(1);
    const creative = await test.db.query('select 1 from fatigue_creatives where org_id = $1 and campaign_id = $2 and creative_id = $3', [orgId, campaignId, 'late-creative']);
    expect(creative.rows).toHaveLength(1);
  });

  it('the retention job lets every reader read first, then drops the day', async () => {
    await sqlEventWriter(test.db).write({ events: [canonicalEvent(orgId, 'ret-late-24', { id_source: 'client', occurred_at: day(-24).toISOString(), user_key: 'late-user' })], failures: [] });
    const result = await applyRetention(test.db, 23);
    expect(result.deferred).toEqual([]);
    expect(result.dropped).toContain(partitionOf(day(-24)));
    expect(result.dropped).not.toContain(partitionOf(day(-23)));
    expect(result.attribution_step).toMatchObject({ skipped: false, touches: 1 });
    expect(result.fatigue_step).toMatchObject({ skipped: false });
    expect(result.alert_step).toMatchObject({ skipped: false });
    const touch = await test.db.query('select 1 from attribution_touches where org_id = $1 and event_id = $2', [orgId, 'ret-late-24']);
    expect(touch.rows).toHaveLength(1);
  });

  it.runIf(BACKEND === 'postgres')('waits for a running rollup, and defers the drop if it keeps running', async () => {
    // Only a server with several connections can run a rollup elsewhere meanwhile.
    const release = await holdRollupLock(test.db);
    let released = false;
    try {
      await sqlEventWriter(test.db).write({ events: [canonicalEvent(orgId, 'ret-late', { id_source: 'client', occurred_at: day(-20).toISOString() })], failures: [] });
      const busy = await applyRetention(test.db, 10, { rollupWaitMs: 300 });
      expect(busy.dropped).toEqual([]);
      expect(busy.deferred[0]).toEqual({ partition: expect.stringMatching(/^events_p/), reason: 'busy', waiting_for: ['metrics_15m'] });
      expect(busy.deferred.slice(1).every((item) => item.reason === 'not_tried')).toBe(true);
      expect(await partitions()).toContain(partitionOf(day(-20)));
      await release();
      released = true;
    } finally {
      // a failed check must not leave the lock held for the tests after it
      if (!released) await release();
    }
    const done = await applyRetention(test.db, 10);
    expect(done.deferred).toEqual([]);
    expect(done.dropped).toContain(partitionOf(day(-20)));
    // its bucket holds it: it was folded in before its partition went
    const late = await test.db.query<{ total: string }>(
      `select sum(value)::text as total from metrics where org_id = $1 and metric = 'impressions' and entity_type = 'organization'
         and bucket_start > $2::timestamptz - interval '15 minutes' and bucket_start <= $2`,
      [orgId, day(-20)],
    );
    expect(Number(late.rows[0]!.total)).toBe(1);
  });

  it.runIf(BACKEND === 'postgres')('never drops a day under an attribution step that is reading it: waits for it, then drops', async () => {
    // An attribution step in another session that has read a late event of day -8 and not
    // committed yet (its watermark moves with its commit): the drop may not interleave with it.
    await sqlEventWriter(test.db).write({ events: [canonicalEvent(orgId, 'ret-late-8', { id_source: 'client', occurred_at: day(-8).toISOString(), user_key: 'late-user' })], failures: [] });
    await runRollup(test.db);
    await runCreativeFatigue(test.db);
    await runAlertWebhooks(test.db, { serverSecret: 'retention-test-server-secret-0123456789' });
    const partition = partitionOf(day(-8));
    const cutoff = await pastDay(5);
    const releaseStep = await holdInTransaction(test.db, 'select private.attribution_step()');
    let released = false;
    try {
      const started = performance.now();
      expect(await drop(partition, cutoff, 300)).toEqual({ partition, status: 'busy', waiting_for: ['attribution'] });
      expect(performance.now() - started).toBeLessThan(2000);
      expect(await partitions()).toContain(partition);
      // the drop queued no insert behind it: it waited on the step's lock, not on events
      const written = await sqlEventWriter(test.db).write({ events: [canonicalEvent(orgId, 'ret-during-step', { id_source: 'client' })], failures: [] });
      expect(written.inserted).toBe(1);
      // a drop waiting for the step when it commits its read with its watermark: the day goes
      const waiting = drop(partition, cutoff);
      await expect.poll(async () => (await test.db.query(`select 1 from pg_locks where locktype = 'advisory' and not granted`)).rows.length).toBe(1);
      await releaseStep();
      released = true;
      expect(await waiting).toEqual({ partition, status: 'dropped' });
    } finally {
      if (!released) await releaseStep();
    }
    const touch = await test.db.query('select 1 from attribution_touches where org_id = $1 and event_id = $2', [orgId, 'ret-late-8']);
    expect(touch.rows).toHaveLength(1);
  });

  it('carves a stray day out of events_default, so retention drops it like any other day', async () => {
    await sqlEventWriter(test.db).write({ events: [canonicalEvent(orgId, 'ret-stray', { id_source: 'client', occurred_at: '2023-06-01T12:00:00Z' })], failures: [] });
    const inDefault = await test.db.query<{ n: number }>('select count(*)::int as n from events_default');
    expect(inDefault.rows[0]!.n).toBe(1);
    const result = (await partitionUpkeepJob.run(test.db, { retentionDays: 30 })) as { carved: number; retention: { dropped: string[] } };
    expect(result.carved).toBe(1);
    expect(result.retention.dropped).toContain('events_p20230601');
    const left = await test.db.query<{ n: number }>('select count(*)::int as n from events_default');
    expect(left.rows[0]!.n).toBe(0);
    const stray = await test.db.query('select 1 from events where event_id = $1', ['ret-stray']);
    expect(stray.rows).toHaveLength(0);
  });

  it('runs from the scheduled job with the configured retention, and refuses a future cutoff', async () => {
    const result = (await partitionUpkeepJob.run(test.db, { retentionDays: 3 })) as { created: number; retention: { dropped: string[] } };
    expect(result.retention.dropped).toContain(partitionOf(day(-5)));
    expect(await partitions()).toContain(partitionOf(day(14)));
    expect(await sqlState(() => test.db.query(`select private.event_partitions_before((now() at time zone 'UTC')::date + 1)`))).toBe('22023');
    expect(await sqlState(() => test.db.query(`select private.prune_event_id_ledger((now() at time zone 'UTC')::date + 1)`))).toBe('22023');
    // only a daily partition of a day before a past cutoff
    const today = (await test.db.query<{ d: string }>(`select (now() at time zone 'UTC')::date::text as d`)).rows[0]!.d;
    expect(await sqlState(() => test.db.query('select private.drop_event_partition($1, $2::date)', ['events_default', today]))).toBe('22023');
    expect(await sqlState(() => test.db.query('select private.drop_event_partition($1, $2::date)', [partitionOf(day(0)), today]))).toBe('22023');
    // a day already gone (another run dropped it) is no error
    const gone = await test.db.query<{ result: { status: string } }>('select private.drop_event_partition($1, $2::date) as result', ['events_p20000101', today]);
    expect(gone.rows[0]!.result.status).toBe('absent');
    await expect(applyRetention(test.db, 0)).rejects.toMatchObject({ code: 'invalid_argument' });
  });

  it('prunes the attribution touches no path can take any more, exactly, and keeps the rest', async () => {
    const state = async () => (await test.db.query<{ p: object }>(`select properties as p from rollup_state where name = 'metrics_15m'`)).rows[0]!.p;
    const saved = await state();
    const setLogStart = (at: string | null) =>
      test.db.query(`update rollup_state set properties = (properties - 'log_starts_at') || jsonb_strip_nulls(jsonb_build_object('log_starts_at', $1::timestamptz)) where name = 'metrics_15m'`, [at]);
    const neededFromIs = async (expression: string, at: string | null = null) =>
      (await test.db.query<{ ok: boolean }>(`select private.attribution_touches_needed_from() = ${expression} as ok`, at === null ? [] : [at])).rows[0]!.ok;
    // the log starts 450 days ago, before the 400 days still accepted: touches are needed from 90 days before that
    const logStart = new Date(Date.now() - 450 * 86_400_000).toISOString();
    const touch = (id: string, expression: string) =>
      test.db.query(`insert into attribution_touches (org_id, user_key, at, event_id, is_click) values ($1, 'prune-user', ${expression}, $2, false)`, [orgId, id]);
    const left = async () =>
      (await test.db.query<{ id: string }>(`select event_id as id from attribution_touches where user_key = 'prune-user' order by at`)).rows.map((row) => row.id);
    try {
      // retention has dropped nothing yet: the whole log can be rebuilt, every touch is needed
      await setLogStart(null);
      expect(await neededFromIs(`'-infinity'::timestamptz`)).toBe(true);

      await setLogStart(logStart);
      expect(await neededFromIs(`$1::timestamptz - interval '90 days'`, logStart)).toBe(true);
      const bound = `$3::timestamptz - interval '90 days'`;
      const at = (id: string, offset: string) =>
        test.db.query(`insert into attribution_touches (org_id, user_key, at, event_id, is_click) values ($1, 'prune-user', ${bound} + interval '${offset}', $2, false)`, [orgId, id, logStart]);
      await at('older-by-200d', '-200 days');
      await at('older-by-1ms', '-1 millisecond');
      await at('at-bound', '0');
      await at('after-by-1ms', '1 millisecond');
      await touch('recent', `now() - interval '10 days'`);

      // a path still to be built, older than the log's start, keeps what it may take
      await test.db.query(
        `insert into attribution_paths (org_id, conversion_key, event_id, converted_at, first_received_at, links_user, status, status_event_id, status_received_at)
         values ($1, '["prune-conversion"]', 'prune-conversion', $2::timestamptz - interval '100 days', now(), true, 'approved', 'prune-conversion', now())`,
        [orgId, logStart],
      );
      // a cutoff before the bound prunes only up to the cutoff; a future one is refused
      const prune = async (cutoff: string) => Number((await test.db.query<{ n: string }>('select private.prune_attribution_touches($1::date) as n', [cutoff])).rows[0]!.n);
      expect(await prune(new Date(Date.parse(logStart) - 400 * 86_400_000).toISOString().slice(0, 10))).toBe(0);
      expect(await sqlState(() => test.db.query(`select private.prune_attribution_touches((now() at time zone 'UTC')::date + 1)`))).toBe('22023');
      expect(await prune(await pastDay(0))).toBe(1);
      expect(await left()).toEqual(['older-by-1ms', 'at-bound', 'after-by-1ms', 'recent']);

      // built: the job prunes exactly the touches before the bound
      await test.db.query(`update attribution_paths set path_pending = false where org_id = $1 and conversion_key = '["prune-conversion"]'`, [orgId]);
      await setLogStart(logStart);
      const result = await applyRetention(test.db, 30);
      expect(result.dropped).toEqual([]);
      expect(result.attribution_touches_pruned).toBe(1);
      expect(await left()).toEqual(['at-bound', 'after-by-1ms', 'recent']);
      // the stored path stays (the ledger)
      const path = await test.db.query(`select 1 from attribution_paths where org_id = $1 and conversion_key = '["prune-conversion"]'`, [orgId]);
      expect(path.rows).toHaveLength(1);
    } finally {
      await test.db.query(`update rollup_state set properties = $1::jsonb where name = 'metrics_15m'`, [JSON.stringify(saved)]);
      await test.db.query(`delete from attribution_paths where org_id = $1 and conversion_key = '["prune-conversion"]'`, [orgId]);
    }
  });
});
