import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createOrganization } from '../../core/admin.ts';
import { sqlEventWriter } from '../../core/ingest/writer.ts';
import { type RetentionResult, PARTITION_LOCK_TIMEOUT_MS, partitionUpkeepJob } from '../../scheduled/jobs/partition-upkeep.ts';
import { runRollup } from '../../scheduled/jobs/rollup.ts';
import { BACKEND, createTestDatabase, type TestDatabase } from '../helpers/database.ts';
import { canonicalEvent } from '../helpers/events.ts';

// Retention must never make ingestion queue behind it: a partition drop waits a bounded time
// for its lock on events, gives up, and the partition goes at a later run.
describe(`retention under lock contention (${BACKEND})`, () => {
  let test: TestDatabase;
  let orgId: string;
  const day = (offset: number) => new Date(Date.now() + offset * 86_400_000);
  const partitionOf = (date: Date) => `events_p${date.toISOString().slice(0, 10).replaceAll('-', '')}`;
  const exists = async (name: string) =>
    (await test.db.query(`select 1 from pg_class where relname = $1 and relkind = 'r'`, [name])).rows.length === 1;
  const event = (id: string, daysAgo: number) => canonicalEvent(orgId, id, { id_source: 'client', occurred_at: day(-daysAgo).toISOString() });

  beforeAll(async () => {
    test = await createTestDatabase();
    orgId = (await createOrganization(test.db, { name: 'Locks Co' })).id;
    await test.db.query(`select private.ensure_event_partitions((now() at time zone 'UTC')::date - 40, (now() at time zone 'UTC')::date)`);
    await sqlEventWriter(test.db).write({ events: [event('old-38', 38), event('old-36', 36)], failures: [] });
    await runRollup(test.db);
  });
  afterAll(() => test?.drop());
  // a failed test must not leave its refusal behind for the next one
  afterEach(() => test.db.exec('drop event trigger if exists test_refuse_ddl'));

  it('skips the partitions it cannot lock, reports them, and makes or drops them at the next run', async () => {
    // A lock refused inside the database, on any backend (PGlite has a single session, so no
    // real second holder): an event trigger refuses partition DDL as a lock timeout would.
    await test.db.exec(`
      create function public.test_refuse_ddl() returns event_trigger language plpgsql as $$
      begin
        -- only the partition DDL of upkeep and retention (a rollup creates temporary tables)
        if current_query() ~ '(upkeep_event_partitions|drop_event_partition)' then
          raise exception 'canceling statement due to lock timeout' using errcode = 'lock_not_available';
        end if;
      end $$;
      create event trigger test_refuse_ddl on ddl_command_start when tag in ('ALTER TABLE', 'CREATE TABLE')
        execute function public.test_refuse_ddl();`);
    // days 15 to 17 ahead to create, days before 35 ago to drop
    const input = { daysAhead: 17, retentionDays: 35 };
    const skipped = (await partitionUpkeepJob.run(test.db, input)) as UpkeepResult;
    expect(skipped).toMatchObject({ created: 0, locked: true });
    expect(await exists(partitionOf(day(17)))).toBe(false);
    expect(skipped.retention.dropped).toEqual([]);
    expect(skipped.retention.deferred[0]).toEqual({ partition: partitionOf(day(-40)), reason: 'locked' });
    // the rest need the same lock: not tried this run (ingestion paid one wait, not one per day)
    expect(skipped.retention.deferred.length).toBeGreaterThan(2);
    expect(skipped.retention.deferred.slice(1).every((item) => item.reason === 'not_tried')).toBe(true);
    expect(await exists(partitionOf(day(-38)))).toBe(true);
    const logStart = await test.db.query(`select properties ->> 'log_starts_at' as at from rollup_state where name = 'metrics_15m'`);
    expect(logStart.rows[0]!.at).toBeNull();

    await test.db.exec('drop event trigger test_refuse_ddl; drop function public.test_refuse_ddl();');
    const retried = (await partitionUpkeepJob.run(test.db, input)) as UpkeepResult;
    expect(retried).toMatchObject({ created: 3, locked: false });
    expect(await exists(partitionOf(day(17)))).toBe(true);
    expect(retried.retention.deferred).toEqual([]);
    expect(retried.retention.dropped).toEqual(skipped.retention.deferred.map((item) => item.partition));
    expect(await exists(partitionOf(day(-38)))).toBe(false);
  });

  it.runIf(BACKEND === 'postgres')(
    'inserts do not wait behind partition upkeep while a long transaction holds events, and upkeep succeeds once it ends',
    async () => {
      // A long transaction that has inserted into events (a slow batch, an open session).
      let finishBlocker!: () => void;
      const blockerMayFinish = new Promise<void>((resolve) => (finishBlocker = resolve));
      let blockerHolds!: () => void;
      const holding = new Promise<void>((resolve) => (blockerHolds = resolve));
      const blocker = test.db.transaction(async (tx) => {
        await tx.query(`insert into events (org_id, event_id, type, occurred_at) values ($1, 'blocker', 'impression', now())`, [orgId]);
        blockerHolds();
        await blockerMayFinish;
      });
      await holding;
      // days ahead to create (that locks events too), and days behind to drop
      const input = { daysAhead: 20, retentionDays: 30 };  // days 18 to 20 ahead are new
      try {
        const insertsMs: number[] = [];
        const upkeepStarted = performance.now();
        let upkeepMs = 0;
        const upkeep = partitionUpkeepJob.run(test.db, input).then((result) => {
          upkeepMs = performance.now() - upkeepStarted;
          return result as UpkeepResult;
        });
        // an insert queued behind each of upkeep's two lock waits (creating, then dropping)
        for (const step of ['create', 'drop']) {
          await waitFor(async () => (await waitingForEvents()) || upkeepMs > 0);
          const started = performance.now();
          const written = await sqlEventWriter(test.db).write({ events: [event(`during-${step}`, 0)], failures: [] });
          insertsMs.push(performance.now() - started);
          expect(written.inserted).toBe(1);
        }
        const result = await upkeep;
        // each insert waited at most the rest of one lock timeout, not for the blocker
        for (const ms of insertsMs) expect(ms).toBeLessThan(PARTITION_LOCK_TIMEOUT_MS + 1000);
        expect(upkeepMs).toBeLessThan(2 * PARTITION_LOCK_TIMEOUT_MS + 5000);
        expect(result).toMatchObject({ created: 0, locked: true });
        expect(result.retention.dropped).toEqual([]);
        expect(result.retention.deferred[0]).toEqual({ partition: expect.stringMatching(/^events_p\d{8}$/), reason: 'locked' });
        console.log(
          `retention-locks: inserts waited ${insertsMs.map((ms) => ms.toFixed(0)).join(' and ')} ms behind upkeep ` +
            `(lock timeout ${PARTITION_LOCK_TIMEOUT_MS} ms); the upkeep run gave up after ${upkeepMs.toFixed(0)} ms`,
        );
      } finally {
        finishBlocker();
        await blocker;
      }
      const later = (await partitionUpkeepJob.run(test.db, input)) as UpkeepResult;
      expect(later).toMatchObject({ created: 3, locked: false });
      expect(later.retention.deferred).toEqual([]);
      expect(later.retention.dropped).toContain(partitionOf(day(-31)));
      expect(await exists(partitionOf(day(-31)))).toBe(false);
      const stored = await test.db.query<{ event_id: string }>(`select event_id from events where org_id = $1 and event_id like any ('{blocker,during-%}') order by 1`, [orgId]);
      expect(stored.rows.map((row) => row.event_id)).toEqual(['blocker', 'during-create', 'during-drop']);
    },
    30_000,
  );

  /** Some session waits for an ACCESS EXCLUSIVE lock on events (upkeep, queued behind the blocker). */
  async function waitingForEvents(): Promise<boolean> {
    const { rows } = await test.db.query<{ n: number }>(
      `select count(*)::int as n from pg_locks where not granted and mode = 'AccessExclusiveLock' and relation = 'public.events'::regclass`,
    );
    return rows[0]!.n > 0;
  }
});

interface UpkeepResult {
  created: number;
  locked: boolean;
  retention: RetentionResult;
}

async function waitFor(check: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > until) throw new Error('timed out waiting for the condition');
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
