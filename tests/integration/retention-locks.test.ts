import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createOrganization } from '../../core/admin.ts';
import { sqlEventWriter } from '../../core/ingest/writer.ts';
import { applyRetention, RETENTION_LOCK_TIMEOUT_MS } from '../../scheduled/jobs/partition-upkeep.ts';
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

  it('skips the partitions it cannot lock, reports them, and drops them at the next run', async () => {
    // A lock refused inside the database, on any backend (PGlite has a single session, so no
    // real second holder): an event trigger refuses the detach as a lock timeout would.
    await test.db.exec(`
      create function public.test_refuse_detach() returns event_trigger language plpgsql as $$
      begin
        raise exception 'canceling statement due to lock timeout' using errcode = 'lock_not_available';
      end $$;
      create event trigger test_refuse_detach on ddl_command_start when tag in ('ALTER TABLE')
        execute function public.test_refuse_detach();`);
    const skipped = await applyRetention(test.db, 35);
    expect(skipped.dropped).toEqual([]);
    expect(skipped.deferred[0]).toEqual({ partition: partitionOf(day(-40)), reason: 'locked' });
    // the rest need the same lock: not tried this run (ingestion paid one wait, not one per day)
    expect(skipped.deferred.length).toBeGreaterThan(2);
    expect(skipped.deferred.slice(1).every((item) => item.reason === 'not_tried')).toBe(true);
    expect(await exists(partitionOf(day(-38)))).toBe(true);
    const logStart = await test.db.query(`select properties ->> 'log_starts_at' as at from rollup_state where name = 'metrics_15m'`);
    expect(logStart.rows[0]!.at).toBeNull();

    await test.db.exec('drop event trigger test_refuse_detach; drop function public.test_refuse_detach();');
    const retried = await applyRetention(test.db, 35);
    expect(retried.deferred).toEqual([]);
    expect(retried.dropped).toEqual(skipped.deferred.map((item) => item.partition));
    expect(await exists(partitionOf(day(-38)))).toBe(false);
  });

  it.runIf(BACKEND === 'postgres')(
    'an insert does not wait behind retention while a long transaction holds events, and retention succeeds once it ends',
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
      try {
        const retentionStarted = performance.now();
        const retention = applyRetention(test.db, 30).then((result) => ({ result, ms: performance.now() - retentionStarted }));
        // wait until retention queues for its lock on events, then insert behind it
        await waitFor(async () => {
          const { rows } = await test.db.query<{ n: number }>(
            `select count(*)::int as n from pg_locks where not granted and mode = 'AccessExclusiveLock' and relation = 'public.events'::regclass`,
          );
          return rows[0]!.n > 0;
        });
        const insertStarted = performance.now();
        const written = await sqlEventWriter(test.db).write({ events: [event('during-retention', 0)], failures: [] });
        const insertMs = performance.now() - insertStarted;
        expect(written.inserted).toBe(1);
        // the insert waited at most the rest of retention's lock timeout, not for the blocker
        expect(insertMs).toBeLessThan(RETENTION_LOCK_TIMEOUT_MS + 1000);
        const { result, ms } = await retention;
        expect(ms).toBeLessThan(RETENTION_LOCK_TIMEOUT_MS + 5000);
        expect(result.dropped).toEqual([]);
        expect(result.deferred[0]).toEqual({ partition: expect.stringMatching(/^events_p\d{8}$/), reason: 'locked' });
        console.log(`retention-locks: insert waited ${insertMs.toFixed(0)} ms behind retention (lock timeout ${RETENTION_LOCK_TIMEOUT_MS} ms); retention gave up after ${ms.toFixed(0)} ms`);
      } finally {
        finishBlocker();
        await blocker;
      }
      const later = await applyRetention(test.db, 30);
      expect(later.deferred).toEqual([]);
      expect(later.dropped).toContain(partitionOf(day(-31)));
      expect(await exists(partitionOf(day(-31)))).toBe(false);
      const stored = await test.db.query(`select event_id from events where org_id = $1 and event_id in ('blocker', 'during-retention') order by 1`, [orgId]);
      expect(stored.rows.map((row) => row.event_id)).toEqual(['blocker', 'during-retention']);
    },
    30_000,
  );
});

async function waitFor(check: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > until) throw new Error('timed out waiting for the condition');
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
