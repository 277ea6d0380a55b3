import type { EventSink } from '../../core/ingest/batch.ts';
import { dedupeBatch, outcomesOf, type EventWriter } from '../../core/ingest/writer.ts';

/** Writes each send straight through the writer: one round trip per request (tests, replays, tools). */
export function directSink(writer: EventWriter): EventSink {
  return {
    async send(batch) {
      const { unique, repeat } = dedupeBatch(batch);
      if (unique.events.length === 0 && unique.failures.length === 0) return { outcomes: repeat.map(() => 'duplicate') };
      return { outcomes: outcomesOf(batch, repeat, await writer.write(unique)) };
    },
  };
}
