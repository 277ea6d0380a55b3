import { describe, expect, it } from 'vitest';
import { canonicalEvent } from '../helpers/events.ts';
import { PreciseError } from '../../core/errors.ts';
import { queueSink, toMessages, type QueueMessage } from '../../functions/sinks/queue.ts';

const event = (id: string, blob = '') =>
  canonicalEvent('0b000000-0000-4000-8000-000000000001', id, { properties: blob ? { blob } : {}, context: { source: 'batch' } });

describe('queue sink', () => {
  it('packs events into messages within the Queue limits', () => {
    const small = toMessages({ events: Array.from({ length: 250 }, (_, i) => event(`e-${i}`)), failures: [] });
    expect(small.map((m) => m.batch.events.length)).toEqual([100, 100, 50]);
    const big = toMessages({ events: Array.from({ length: 40 }, (_, i) => event(`b-${i}`, 'x'.repeat(8000))), failures: [] });
    for (const message of big) expect(new TextEncoder().encode(JSON.stringify(message)).length).toBeLessThanOrEqual(128 * 1024);
    expect(big.flatMap((m) => m.batch.events.map((e) => e.event_id))).toEqual(Array.from({ length: 40 }, (_, i) => `b-${i}`));
  });

  it('answers only after sendBatch resolves, in sends of at most 100 messages and 256 KB', async () => {
    const sends: number[] = [];
    // STAND-IN for a Cloudflare Queue binding (the real one is exercised in tests/workers): it
    // records what sendBatch is given.
    const queue = {
      sendBatch: async (messages: Iterable<MessageSendRequest<QueueMessage>>) => {
        const list = [...messages];
        expect(new TextEncoder().encode(JSON.stringify(list.map((m) => m.body))).length).toBeLessThanOrEqual(256 * 1024);
        sends.push(list.length);
      },
    } as unknown as Queue<QueueMessage>;
    const receipt = await queueSink(queue).send({
      events: [...Array.from({ length: 300 }, (_, i) => event(`s-${i}`, 'y'.repeat(1500))), event('s-0', 'y'.repeat(1500))],
      failures: [],
    });
    expect(receipt.outcomes.filter((o) => o === 'stored')).toHaveLength(300);
    expect(receipt.outcomes.at(-1)).toBe('duplicate');
    expect(sends.reduce((a, b) => a + b, 0)).toBeGreaterThan(2);
  });

  it('turns a refused sendBatch into a 503 with Retry-After, acknowledging nothing', async () => {
    // STAND-IN for a Cloudflare Queue that refuses (an outage cannot be produced locally).
    const failing = { sendBatch: async () => Promise.reject(new Error('Queue send failed: internal error')) } as unknown as Queue<QueueMessage>;
    const original = console.error;
    console.error = () => {};
    try {
      const error = await queueSink(failing).send({ events: [event('f-1')], failures: [] }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(PreciseError);
      expect((error as PreciseError).status).toBe(503);
      expect((error as PreciseError).details.retry_after_seconds).toBe(1);
      expect((error as PreciseError).message).not.toContain('internal error');
    } finally {
      console.error = original;
    }
  });

  it('when a later sendBatch fails, says per event what was queued, so a retry of the rest stores each event once', async () => {
    // STAND-IN for a Cloudflare Queue whose second sendBatch fails every time (an outage cannot
    // be produced locally); it keeps what it accepted, as the real queue would deliver it.
    const delivered: string[] = [];
    let calls = 0;
    let failSecond = true;
    const queue = {
      sendBatch: async (messages: Iterable<MessageSendRequest<QueueMessage>>) => {
        calls += 1;
        if (failSecond && calls >= 2) throw new Error('Queue send failed');
        for (const message of messages) delivered.push(...message.body.batch.events.map((e) => e.event_id));
      },
    } as unknown as Queue<QueueMessage>;
    const sink = queueSink(queue, { retryDelaysMs: [1, 1] });
    // id-less events get edge ids: a whole-request retry would store them again under new ids
    const events = Array.from({ length: 300 }, (_, i) => event(`q-${i}`, 'z'.repeat(1500)));
    const original = console.error;
    console.error = () => {};
    try {
      const first = await sink.send({ events, failures: [] });
      const queued = first.outcomes.filter((o) => o === 'stored').length;
      const missing = events.filter((_, i) => first.outcomes[i] === 'unavailable');
      expect(queued).toBeGreaterThan(0);
      expect(missing.length).toBeGreaterThan(0);
      expect(queued + missing.length).toBe(300);
      expect(calls).toBe(1 + 3); // the second send was tried three times
      // the sender sends again only what was not taken
      failSecond = false;
      const second = await sink.send({ events: missing, failures: [] });
      expect(second.outcomes.every((o) => o === 'stored')).toBe(true);
      expect(delivered).toHaveLength(300);
      expect(new Set(delivered).size).toBe(300);
    } finally {
      console.error = original;
    }
  });
});
