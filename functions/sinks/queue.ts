import type { EventOutcome, EventSink, IngestBatch } from '../../core/ingest/batch.ts';
import { PreciseError } from '../../core/errors.ts';
import { dedupeBatch } from '../../core/ingest/writer.ts';
import { eventKey } from '../../core/ingest/batch.ts';

/**
 * The edge sink: events go to a Cloudflare Queue and the request answers once sendBatch has
 * resolved (the queue holds them durably; the consumer writes them to Postgres with retries
 * and a dead-letter queue). Messages carry several events each, within the Queue's limits
 * (128 KB a message, 100 messages and 256 KB a sendBatch).
 */
export interface QueueMessage {
  v: 1;
  batch: IngestBatch;
}

const MAX_MESSAGE_BYTES = 120 * 1024;
const MAX_EVENTS_PER_MESSAGE = 100;
const MAX_MESSAGES_PER_SEND = 100;
const MAX_SEND_BYTES = 250 * 1024;

const encoder = new TextEncoder();
const bytesOf = (value: unknown) => encoder.encode(JSON.stringify(value)).length;

/** Pauses between attempts of one sendBatch within the request (then the request gives up). */
const SEND_RETRY_DELAYS_MS = [50, 250];

export function queueSink(queue: Queue<QueueMessage>, options: { retryDelaysMs?: number[] } = {}): EventSink {
  const delays = options.retryDelaysMs ?? SEND_RETRY_DELAYS_MS;
  return {
    async send(batch) {
      const { unique, repeat } = dedupeBatch(batch);
      const groups = groupForSend(toMessages(unique));
      const queued = new Set<string>();
      for (const [index, group] of groups.entries()) {
        try {
          await sendWithRetries(queue, group, delays);
        } catch (error) {
          console.error('ingest: queue send failed:', error);
          // Nothing queued yet: the sender may retry everything. Some queued: a whole-request
          // error would make its retry store those again (id-less events get new ids), so the
          // answer says per event what was taken and what must be sent again.
          if (index === 0) {
            throw new PreciseError('unavailable', 'the event queue did not accept the events; retry', { retry_after_seconds: 1 });
          }
          break;
        }
        for (const message of group) for (const event of message.batch.events) queued.add(eventKey(event));
      }
      // Queued is durable; whether an id was already stored is known to the consumer only.
      return {
        outcomes: batch.events.map((event, i): EventOutcome =>
          !queued.has(eventKey(event)) ? 'unavailable' : repeat[i] ? 'duplicate' : 'stored',
        ),
      };
    },
  };
}

async function sendWithRetries(queue: Queue<QueueMessage>, group: QueueMessage[], delaysMs: number[]): Promise<void> {
  for (let attempt = 0; ; attempt += 1) {
    try {
      await queue.sendBatch(group.map((body) => ({ body, contentType: 'json' as const })));
      return;
    } catch (error) {
      if (attempt >= delaysMs.length) throw error;
      await new Promise((resolve) => setTimeout(resolve, delaysMs[attempt]));
    }
  }
}

/** Splits a batch into messages of at most 100 rows and about 120 KB each. */
export function toMessages(batch: IngestBatch): QueueMessage[] {
  const messages: QueueMessage[] = [];
  let current: IngestBatch = { events: [], failures: [] };
  let currentBytes = 0;
  const push = (kind: 'events' | 'failures', row: never) => {
    const size = bytesOf(row) + 1;
    const rows = current.events.length + current.failures.length;
    if (rows > 0 && (rows >= MAX_EVENTS_PER_MESSAGE || currentBytes + size > MAX_MESSAGE_BYTES)) {
      messages.push({ v: 1, batch: current });
      current = { events: [], failures: [] };
      currentBytes = 0;
    }
    (current[kind] as never[]).push(row);
    currentBytes += size;
  };
  // failure records first: they ride in the first send, which is all or nothing for the request
  for (const failure of batch.failures) push('failures', failure as never);
  for (const event of batch.events) push('events', event as never);
  if (current.events.length + current.failures.length > 0) messages.push({ v: 1, batch: current });
  return messages;
}

function groupForSend(messages: QueueMessage[]): QueueMessage[][] {
  const groups: QueueMessage[][] = [];
  let group: QueueMessage[] = [];
  let groupBytes = 0;
  for (const message of messages) {
    const size = bytesOf(message);
    if (group.length > 0 && (group.length >= MAX_MESSAGES_PER_SEND || groupBytes + size > MAX_SEND_BYTES)) {
      groups.push(group);
      group = [];
      groupBytes = 0;
    }
    group.push(message);
    groupBytes += size;
  }
  if (group.length > 0) groups.push(group);
  return groups;
}
