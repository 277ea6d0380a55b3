import { failureRecord, type IngestBatch } from '../core/ingest/batch.ts';
import { writeIsolating, type EventWriter } from '../core/ingest/writer.ts';
import type { QueueMessage } from './sinks/queue.ts';

/**
 * The queue consumer: all messages of a delivery are written in one round trip through
 * public.ingest_events (dedup makes a redelivery count once). A failed write retries every
 * message with exponential backoff; after max_retries the queue moves them to the dead-letter
 * queue, whose consumer (this function, for a queue named *-dlq) stores them in failed_events.
 */
export const RETRY_BASE_SECONDS = 2;
export const RETRY_MAX_SECONDS = 300;

/** Exponential backoff: 2 s after the first attempt, doubling, at most 5 minutes. */
export function retryDelaySeconds(attempts: number): number {
  return Math.min(RETRY_MAX_SECONDS, RETRY_BASE_SECONDS * 2 ** Math.max(0, attempts - 1));
}

export async function consumeEventQueue(batch: MessageBatch<QueueMessage>, writer: EventWriter): Promise<void> {
  if (batch.messages.length === 0) return;
  const deadLetters = batch.queue.endsWith('-dlq');
  const combined: IngestBatch = deadLetters ? deadLetterBatch(batch) : mergeMessages(batch);
  try {
    // a message's bad row is isolated (stored as a failed event), never retried into the DLQ with its neighbours
    await writeIsolating(writer, combined);
    batch.ackAll();
  } catch (error) {
    console.error(`queue ${batch.queue}: write of ${batch.messages.length} messages failed:`, error);
    for (const message of batch.messages) message.retry({ delaySeconds: retryDelaySeconds(message.attempts) });
  }
}

function mergeMessages(batch: MessageBatch<QueueMessage>): IngestBatch {
  const seen = new Set<string>();
  const merged: IngestBatch = { events: [], failures: [] };
  for (const message of batch.messages) {
    for (const event of message.body.batch.events) {
      const key = `${event.org_id} ${event.event_id}`;
      if (seen.has(key)) continue;
      seen.add(key);
      merged.events.push(event);
    }
    merged.failures.push(...message.body.batch.failures);
  }
  return merged;
}

/** Events that never made it: kept as failed events, replayable from the CLI. */
function deadLetterBatch(batch: MessageBatch<QueueMessage>): IngestBatch {
  const failures = batch.messages.flatMap((message) => [
    ...message.body.batch.events.map((event) =>
      failureRecord({
        orgId: event.org_id,
        source: event.context.source ?? 'queue',
        rejection: { code: 'dead_letter', message: `not written after ${message.attempts} attempts` },
        payload: JSON.stringify(event),
        payloadFormat: 'canonical',
        receivedAt: new Date(event.received_at),
      }),
    ),
    ...message.body.batch.failures,
  ]);
  return { events: [], failures };
}
