import { randomUUID } from 'node:crypto';
import { canonicalEvent } from '../helpers/events.ts';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CanonicalEvent } from '../../core/events/canonical.ts';
import { failureRecord } from '../../core/ingest/batch.ts';
import { sqlEventWriter } from '../../core/ingest/writer.ts';
import { runCli } from '../helpers/cli.ts';
import { BACKEND } from '../helpers/database.ts';
import { createIngestHarness, type IngestHarness } from '../helpers/ingest.ts';

describe(`failed events: stored, listed, replayed (${BACKEND})`, () => {
  let h: IngestHarness;
  beforeAll(async () => {
    h = await createIngestHarness();
  });
  afterAll(() => h?.close());

  const canonical = (id: string, overrides: Partial<CanonicalEvent> = {}) =>
    canonicalEvent(h.orgId, id, {
      id_source: 'client',
      occurred_at: new Date(Date.now() - 3_600_000).toISOString(),
      received_at: new Date(Date.now() - 3_500_000).toISOString(),
      creative_id: 'crv-1',
      properties: { n: 1 },
      context: { source: 'batch' },
      ...overrides,
    });

  const cli = async (...argv: string[]) =>
    runCli({ DATABASE_URL: await h.test.connectionUrl(), PRECISE_DATA_DIR: '/nonexistent' }, ...argv);

  it('keeps a row the database refuses without sinking the rest of its batch', async () => {
    const result = await sqlEventWriter(h.test.db).write({
      events: [canonical('slow-ok-1'), canonical('slow-bad', { type: 'Not Snake' }), canonical('slow-ok-2')],
      failures: [],
    });
    expect(result.inserted).toBe(2);
    expect([...result.failed.keys()]).toEqual([`${h.orgId} slow-bad`]);
    expect(result.failed.get(`${h.orgId} slow-bad`)).toMatch(/check constraint/);
    const failed = (await h.failedEvents()).filter((row) => row.reason_code === 'db_rejected');
    expect(failed).toHaveLength(1);
    expect(failed[0]!.properties.payload_format).toBe('canonical');
  });

  it('stores one row for a key sent twice in one call, even with two different times', async () => {
    const result = await sqlEventWriter(h.test.db).write({
      events: [canonical('twice', { occurred_at: new Date(Date.now() - 7_200_000).toISOString() }), canonical('twice')],
      failures: [],
    });
    expect(result.inserted).toBe(1);
    const { rows } = await h.test.db.query('select 1 from events where event_id = $1', ['twice']);
    expect(rows).toHaveLength(1);
  });

  it('fails the whole write on a systemic error instead of filing every row as failed', async () => {
    const outcome = await h.test.db
      .transaction(async (tx) => {
        // service_role losing a privilege is not any row's fault
        await tx.query('revoke insert on public.event_ids from service_role');
        await tx.query('set local role service_role');
        await tx.query('select public.ingest_events($1::jsonb)', [JSON.stringify({ events: [canonical('sys-1')], failures: [] })]);
      })
      .then(() => 'committed', (error: { code?: string }) => error.code);
    expect(outcome).toBe('42501');
    const rows = await h.test.db.query(`select 1 from failed_events where payload like '%sys-1%'`);
    expect(rows.rows).toHaveLength(0);
  });

  it('lists and replays through the CLI, idempotently', async () => {
    // What the dead-letter consumer stores for events that never reached the database.
    const lost = ['dlq-1', 'dlq-2'].map((id) =>
      failureRecord({
        orgId: h.orgId,
        source: 'batch',
        rejection: { code: 'dead_letter', message: 'not written after 5 attempts' },
        payload: JSON.stringify(canonical(id)),
        payloadFormat: 'canonical',
        receivedAt: new Date(Date.now() - 3_500_000),
      }),
    );
    await sqlEventWriter(h.test.db).write({ events: [], failures: lost });
    // and one pixel hit that was refused for a bad value
    await h.app.request(`/v1/px?key=${h.publishableKey}&eid=px-bad&v=lots`);

    const listed = await cli('failed', 'list', '--org', h.orgId, '--json');
    expect(listed.code).toBe(0);
    const rows = JSON.parse(listed.out) as Array<{ reason_code: string }>;
    expect(rows.map((row) => row.reason_code).sort()).toEqual(['db_rejected', 'dead_letter', 'dead_letter', 'invalid_field']);

    const replay = await cli('failed', 'replay', '--org', h.orgId, '--json');
    // the still-invalid pixel and the db-refused row keep failing: exit 1, and say so
    expect(replay.code).toBe(1);
    expect(JSON.parse(replay.out)).toEqual({ replayed: 4, stored: 2, duplicates: 0, refused: 2 });
    expect(replay.err).toMatch(/replay \[#+\] 4\/4 100%/);
    const replayed = (await h.events()).filter((event) => event.event_id.startsWith('dlq-'));
    expect(replayed).toHaveLength(2);
    // it enters the log now, and remembers when it first arrived
    expect(Date.now() - replayed[0]!.received_at.getTime()).toBeLessThan(60_000);
    expect(replayed[0]!.context.first_received_at).toBeDefined();
    expect(replayed[0]!.context.replayed_from).toMatch(/^[0-9a-f-]{36}$/);

    // replayed rows drop out of the default list; --all replays them again: duplicates, not copies
    const pending = JSON.parse((await cli('failed', 'list', '--org', h.orgId, '--json')).out) as unknown[];
    expect(pending).toHaveLength(2);
    const again = await cli('failed', 'replay', '--org', h.orgId, '--all', '--json');
    expect(JSON.parse(again.out)).toMatchObject({ stored: 0, duplicates: 2, refused: 2 });
    expect((await h.events()).filter((event) => event.event_id.startsWith('dlq-'))).toHaveLength(2);
  });

  it('replays an id-less refused input under the id it was first given', async () => {
    // An id-less beacon event refused, then (say) the cause fixed on our side: replay twice.
    const { rows } = await h.test.db.query<{ id: string }>(
      `insert into failed_events (org_id, source, reason_code, reason, payload, properties)
       values ($1, 'beacon', 'unavailable', 'store down', $2, $3) returning id`,
      [h.orgId, JSON.stringify({ creative_id: 'replay-me' }), { payload_format: 'json', assigned_event_id: randomUUID(), context: { source: 'beacon' } }],
    );
    const { replayFailedEvents } = await import('../../core/ingest/replay.ts');
    expect(await replayFailedEvents(h.test.db, { ids: [rows[0]!.id] })).toMatchObject({ stored: 1 });
    expect(await replayFailedEvents(h.test.db, { ids: [rows[0]!.id], all: true })).toMatchObject({ duplicates: 1 });
    const stored = (await h.events()).filter((event) => event.creative_id === 'replay-me');
    expect(stored).toHaveLength(1);
    expect(stored[0]!.type).toBe('impression');
  });

  it('refuses bad CLI filters', async () => {
    const bad = await cli('failed', 'list', '--org', 'nope');
    expect(bad.code).toBe(2);
    expect(bad.err).toMatch(/org must be a UUID/);
    expect((await cli('failed', 'replay', '--limit', '0')).err).toMatch(/--limit must be a positive integer/);
  });
});
