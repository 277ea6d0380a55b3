import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { canonicalEvent } from '../helpers/events.ts';
import { createOrganization } from '../../core/admin.ts';
import type { IngestBatch } from '../../core/ingest/batch.ts';
import { sqlEventWriter, type EventWriter } from '../../core/ingest/writer.ts';
import { PreciseError } from '../../core/errors.ts';
import { GroupCommitSink } from '../../functions/sinks/group-commit.ts';
import { BACKEND, createTestDatabase, type TestDatabase } from '../helpers/database.ts';

/** The real writer, counted: how many round trips carried how many events. */
function counted(writer: EventWriter) {
  const writes: number[] = [];
  return {
    writes,
    writer: { write: (batch: IngestBatch) => (writes.push(batch.events.length), writer.write(batch)) } satisfies EventWriter,
  };
}

describe(`group commit (${BACKEND})`, () => {
  let test: TestDatabase;
  let orgId: string;
  const event = (id: string) => canonicalEvent(orgId, id, { id_source: 'client' });
  const stored = async (prefix: string) =>
    (await test.db.query<{ n: number }>(`select count(*)::int as n from events where event_id like $1`, [`${prefix}%`])).rows[0]!.n;

  beforeAll(async () => {
    test = await createTestDatabase();
    orgId = (await createOrganization(test.db, { name: 'Group Commit Co' })).id;
  });
  afterAll(() => test?.drop());

  it('shares writes between concurrent requests and answers each only after its commit', async () => {
    const { writer, writes } = counted(sqlEventWriter(test.db));
    const sink = new GroupCommitSink(writer, { maxBatchEvents: 100, maxWaitMs: 5, concurrency: 2 });
    const visibleAtResolve: boolean[] = [];
    const receipts = await Promise.all(
      Array.from({ length: 300 }, (_, i) =>
        sink.send({ events: [event(`gc-${i}`)], failures: [] }).then(async (receipt) => {
          const { rows } = await test.db.query('select 1 from events where event_id = $1', [`gc-${i}`]);
          visibleAtResolve.push(rows.length === 1);
          return receipt;
        }),
      ),
    );
    expect(receipts.every((receipt) => receipt.outcomes[0] === 'stored')).toBe(true);
    expect(visibleAtResolve.every(Boolean)).toBe(true);
    expect(await stored('gc-')).toBe(300);
    expect(writes.length).toBeLessThan(30);
    expect(Math.max(...writes)).toBeLessThanOrEqual(100);
    expect(writes.reduce((a, b) => a + b, 0)).toBe(300);
  });

  it('tells each request about its own duplicates, across requests in one write', async () => {
    const sink = new GroupCommitSink(sqlEventWriter(test.db), { maxWaitMs: 5 });
    await sink.send({ events: [event('dup-a')], failures: [] });
    const [first, second] = await Promise.all([
      sink.send({ events: [event('dup-a'), event('dup-b')], failures: [] }),
      sink.send({ events: [event('dup-b'), event('dup-c')], failures: [] }),
    ]);
    expect(first.outcomes).toEqual(['duplicate', 'stored']);
    expect(second.outcomes).toEqual(['duplicate', 'stored']);
  });

  it('answers 503 when its waiting room is full instead of growing', async () => {
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const real = sqlEventWriter(test.db);
    const slow: EventWriter = { write: async (batch) => (await gate, real.write(batch)) };
    const sink = new GroupCommitSink(slow, { maxBatchEvents: 10, maxWaitMs: 1, maxPendingEvents: 50, concurrency: 1 });
    const accepted = Array.from({ length: 60 }, (_, i) => sink.send({ events: [event(`full-${i}`)], failures: [] }).then(() => 'ok', (e) => e));
    const outcomes = await Promise.race([Promise.all(accepted), new Promise((r) => setTimeout(() => r('pending'), 50))]);
    expect(outcomes).toBe('pending');
    const overflow = await sink.send({ events: [event('full-over')], failures: [] }).catch((error: unknown) => error);
    expect(overflow).toBeInstanceOf(PreciseError);
    expect((overflow as PreciseError).status).toBe(503);
    expect((overflow as PreciseError).details.retry_after_seconds).toBe(1);
    release();
    const settled = await Promise.all(accepted);
    expect(settled.filter((result) => result === 'ok').length).toBe(60);
    expect(await stored('full-')).toBe(60);
  });

  it('fails every waiter of a write the database did not confirm, and close() drains', async () => {
    const broken = await createTestDatabase();
    await broken.drop(); // a real database that is gone
    const sink = new GroupCommitSink(sqlEventWriter(broken.db), { maxWaitMs: 1 });
    const errors = await Promise.all([1, 2, 3].map((i) => sink.send({ events: [event(`lost-${i}`)], failures: [] }).catch((e: unknown) => e)));
    expect(errors.every((error) => error instanceof PreciseError && error.code === 'unavailable')).toBe(true);

    const healthy = new GroupCommitSink(sqlEventWriter(test.db), { maxWaitMs: 1000 });
    const pending = healthy.send({ events: [event('drain-1')], failures: [] });
    await healthy.close();
    expect((await pending).outcomes).toEqual(['stored']);
  });
});
