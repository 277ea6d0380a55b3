import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createOrganization } from '../../core/admin.ts';
import { sqlEventWriter } from '../../core/ingest/writer.ts';
import { LIMITS } from '../../core/events/limits.ts';
import { applyRetention, partitionUpkeepJob } from '../../scheduled/jobs/partition-upkeep.ts';
import { runRollup } from '../../scheduled/jobs/rollup.ts';
import { BACKEND, createTestDatabase, holdRollupLock, sqlState, type TestDatabase } from '../helpers/database.ts';
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

  it('postpones a partition that holds events not in the metrics yet', async () => {
    // an old event arrives after the rollup step (here: no rollup at all before the drop)
    await sqlEventWriter(test.db).write({ events: [canonicalEvent(orgId, 'ret-late-25', { id_source: 'client', occurred_at: day(-25).toISOString() })], failures: [] });
    const cutoff = (await test.db.query<{ d: string }>(`select ((now() at time zone 'UTC')::date - 10)::text as d`)).rows[0]!.d;
    const { rows } = await test.db.query<{ result: { status: string } }>('select private.drop_event_partition($1, $2::date) as result', [
      partitionOf(day(-25)),
      cutoff,
    ]);
    expect(rows[0]!.result.status).toBe('postponed');
    expect(await partitions()).toContain(partitionOf(day(-25)));
    await runRollup(test.db);
    const retried = await test.db.query<{ result: { status: string } }>('select private.drop_event_partition($1, $2::date) as result', [
      partitionOf(day(-25)),
      cutoff,
    ]);
    expect(retried.rows[0]!.result.status).toBe('dropped');
    const late = await test.db.query<{ total: string }>(
      `select sum(value)::text as total from metrics where org_id = $1 and metric = 'impressions' and entity_type = 'organization'
         and bucket_start > $2::timestamptz - interval '15 minutes' and bucket_start <= $2`,
      [orgId, day(-25)],
    );
    expect(Number(late.rows[0]!.total)).toBe(1);
  });

  it.runIf(BACKEND === 'postgres')('waits for a running rollup, and defers the drop if it keeps running', async () => {
    // Only a server with several connections can run a rollup elsewhere meanwhile.
    const release = await holdRollupLock(test.db);
    await sqlEventWriter(test.db).write({ events: [canonicalEvent(orgId, 'ret-late', { id_source: 'client', occurred_at: day(-20).toISOString() })], failures: [] });
    const busy = await applyRetention(test.db, 10, { rollupWaitMs: 300 });
    expect(busy.dropped).toEqual([]);
    expect(busy.deferred[0]).toEqual({ partition: expect.stringMatching(/^events_p/), reason: 'busy' });
    expect(busy.deferred.slice(1).every((item) => item.reason === 'not_tried')).toBe(true);
    expect(await partitions()).toContain(partitionOf(day(-20)));
    await release();
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
});
