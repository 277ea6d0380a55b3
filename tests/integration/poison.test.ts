import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApiKey, createOrganization } from '../../core/admin.ts';
import { sqlEventWriter } from '../../core/ingest/writer.ts';
import { consumeEventQueue } from '../../functions/queue-consumer.ts';
import type { QueueMessage } from '../../functions/sinks/queue.ts';
import { BACKEND } from '../helpers/database.ts';
import { canonicalEvent } from '../helpers/events.ts';
import { createIngestHarness, type IngestHarness } from '../helpers/ingest.ts';

// A poison row (text Postgres cannot store, a time past the range of dates, JSON nested beyond
// any stack) harms no one else: its sender gets a 4xx naming the field, its valid siblings land,
// and other requests sharing the same group-commit write are stored and answered 2xx.
describe(`a poison row harms no one else (${BACKEND})`, () => {
  let h: IngestHarness;
  let otherOrg: string;
  let otherKey: string;

  beforeAll(async () => {
    h = await createIngestHarness();
    otherOrg = (await createOrganization(h.test.db, { name: 'Bystander Co' })).id;
    otherKey = (await createApiKey(h.test.db, { orgId: otherOrg, kind: 'publishable' })).key;
  });
  afterAll(() => h?.close());

  const beacon = (body: string) => h.app.request(`/v1/px?key=${h.publishableKey}`, { method: 'POST', body });
  const storedIds = async (orgId: string) =>
    new Set((await h.test.db.query<{ event_id: string }>('select event_id from events where org_id = $1', [orgId])).rows.map((r) => r.event_id));

  it("refuses what Postgres cannot store by field, lands the valid siblings, and never fails another tenant's pixels", async () => {
    const deep = '['.repeat(5000) + ']'.repeat(5000);
    const poison: Array<() => Promise<Response> | Response> = [
      () => h.app.request(`/v1/px?key=${h.publishableKey}&eid=p-nul&p.note=a%00b`),
      () => h.app.request(`/v1/px?key=${h.publishableKey}&eid=p-uid&uid=x%00y`),
      () => h.app.request(`/v1/px?key=${h.publishableKey}&eid=p-ts&ts=8640000000000001`),
      () => beacon(`[{"event_id":"b-sur","type":"impression","user_key":"\\ud800"},{"event_id":"b-ok-1","type":"impression"}]`),
      () => beacon(`[{"event_id":"b-key","type":"impression","properties":{"a\\u0000":1}},{"event_id":"b-ok-2","type":"impression"}]`),
      () => beacon(`[{"event_id":"b-deep","type":"impression","properties":{"x":${deep}}},{"event_id":"b-ok-3","type":"impression"}]`),
      () =>
        h.app.request('/v1/events', {
          method: 'POST',
          headers: { authorization: `Bearer ${h.ingestKey}` },
          body: `{"events":[{"event_id":"e-ts","type":"impression","occurred_at":8640000000000001},{"event_id":"e-nul","type":"impression","creative_id":"c\\u0000"},{"event_id":"b-ok-4","type":"impression"}]}`,
        }),
    ];
    // the bystander's steady traffic, interleaved with the poison so they share writes
    const bystander = Array.from({ length: 120 }, (_, i) => () => h.app.request(`/v1/px?key=${otherKey}&eid=ok-${i}`));
    const order = bystander.flatMap((send, i) => (i % 15 === 0 && poison[i / 15] ? [send, poison[i / 15]!] : [send]));
    const responses = await Promise.all(order.map((send) => send()));
    const statuses = responses.map((response) => response.status);

    const bystanderStatuses = statuses.filter((_, i) => bystander.includes(order[i]!));
    expect(bystanderStatuses.filter((status) => status !== 200)).toEqual([]);
    expect((await storedIds(otherOrg)).size).toBe(120);

    const poisonStatuses = statuses.filter((_, i) => poison.includes(order[i]!));
    expect(poisonStatuses.every((status) => status >= 400 && status < 500 || status === 202)).toBe(true);
    expect(statuses.filter((status) => status >= 500)).toEqual([]);
    const mine = await storedIds(h.orgId);
    for (const id of ['b-ok-1', 'b-ok-2', 'b-ok-3', 'b-ok-4']) expect(mine.has(id)).toBe(true);
    for (const id of ['p-nul', 'p-uid', 'p-ts', 'b-sur', 'b-key', 'b-deep', 'e-ts', 'e-nul']) expect(mine.has(id)).toBe(false);

    // every refusal is kept, by field, with a storable payload
    const failed = await h.failedEvents();
    const byCode = failed.map((row) => `${row.reason_code}:${row.field}`);
    expect(byCode).toEqual(
      expect.arrayContaining([
        'invalid_characters:properties.note',
        'invalid_characters:user_key',
        'occurred_at_out_of_range:occurred_at',
        'invalid_characters:creative_id',
        'too_deep:properties.x.0.0.0.0',
      ]),
    );
    expect(failed.some((row) => row.field?.startsWith('properties.a'))).toBe(true);
  });

  it('isolates a row the database refuses inside a shared write: the others are stored, it becomes a failed event', async () => {
    const writer = sqlEventWriter(h.test.db);
    // bypasses validation on purpose: what if a row that Postgres refuses still reached the sink?
    const bad = canonicalEvent(h.orgId, 'raw-poison', { creative_id: 'nul\u0000here' });
    const good = Array.from({ length: 60 }, (_, i) => canonicalEvent(otherOrg, `shared-${i}`));
    const sends = [...good.slice(0, 30).map((event) => h.services.sink.send({ events: [event], failures: [] })),
      h.services.sink.send({ events: [bad], failures: [] }),
      ...good.slice(30).map((event) => h.services.sink.send({ events: [event], failures: [] }))];
    const receipts = await Promise.all(sends);
    expect(receipts.filter((receipt) => receipt.outcomes[0] === 'stored')).toHaveLength(60);
    expect(receipts[30]!.outcomes).toEqual(['failed']);
    const stored = await storedIds(otherOrg);
    for (const event of good) expect(stored.has(event.event_id)).toBe(true);
    const failed = (await h.failedEvents()).filter((row) => row.reason_code === 'db_rejected');
    expect(failed.some((row) => row.payload.includes('raw-poison'))).toBe(true);
    // a direct write of the same rows, as one call, reports the bad one failed and stores the rest
    const again = [...Array.from({ length: 20 }, (_, i) => canonicalEvent(otherOrg, `direct-${i}`)), canonicalEvent(h.orgId, 'raw-poison-2', { user_key: 'a\u0000' })];
    const { writeIsolating } = await import('../../core/ingest/writer.ts');
    const result = await writeIsolating(writer, { events: again, failures: [] });
    expect(result.inserted).toBe(20);
    expect([...result.failed.keys()]).toEqual([`${h.orgId} raw-poison-2`]);
  });

  it('stores the rows of a batch around one the database refuses, with a few subtransactions, not one per row', async () => {
    const events = Array.from({ length: 400 }, (_, i) => canonicalEvent(otherOrg, `sql-${i}`));
    // passes the JSON cast, fails in the insert: a year past timestamptz's range
    events[123] = canonicalEvent(otherOrg, 'sql-bad', { occurred_at: '294277-06-01T00:00:00Z' as string });
    const result = await sqlEventWriter(h.test.db).write({ events, failures: [] });
    expect(result.inserted).toBe(399);
    expect([...result.failed.keys()]).toEqual([`${otherOrg} sql-bad`]);
  });

  it('a queue delivery with a poison row acknowledges every message and stores the rest', async () => {
    const events = Array.from({ length: 10 }, (_, i) => canonicalEvent(otherOrg, `queued-${i}`));
    const bad = canonicalEvent(h.orgId, 'queued-bad', { properties: { note: '\u0000' } });
    const acked: string[] = [];
    const retried: string[] = [];
    // STAND-IN for a Cloudflare Queue delivery (the consumer runs in workerd in tests/workers)
    const message = (id: string, body: QueueMessage) => ({
      id, timestamp: new Date(), attempts: 1, body,
      ack: () => acked.push(id), retry: () => retried.push(id),
    });
    const messages = [
      message('m1', { v: 1, batch: { events: events.slice(0, 5), failures: [] } }),
      message('m2', { v: 1, batch: { events: [bad, ...events.slice(5)], failures: [] } }),
    ];
    const batch = {
      queue: 'precise-events',
      messages,
      ackAll: () => messages.forEach((m) => m.ack()),
      retryAll: () => messages.forEach((m) => m.retry()),
    } as unknown as MessageBatch<QueueMessage>;
    await consumeEventQueue(batch, sqlEventWriter(h.test.db));
    expect(acked.sort()).toEqual(['m1', 'm2']);
    expect(retried).toEqual([]);
    const stored = await storedIds(otherOrg);
    for (const event of events) expect(stored.has(event.event_id)).toBe(true);
    expect((await storedIds(h.orgId)).has('queued-bad')).toBe(false);
  });
});
