import type { EventSink, IngestBatch, SinkReceipt } from '../../core/ingest/batch.ts';
import { PreciseError } from '../../core/errors.ts';
import { dedupeBatch, outcomesOf, writeIsolating, type EventWriter } from '../../core/ingest/writer.ts';

/**
 * Group commit for the Node runtime: concurrent requests share one database write. A request's
 * send() resolves only after the COMMIT of the write that holds its events, so a 2xx still
 * means durable. A write starts when `maxBatchEvents` are waiting or `maxWaitMs` after the
 * first waiter; up to `concurrency` writes run at once, and while they do, new arrivals gather
 * into the next one. The waiting room is bounded: past `maxPendingEvents` a send fails with a
 * 503 instead of letting memory grow without limit.
 */
export interface GroupCommitOptions {
  maxBatchEvents?: number;
  maxWaitMs?: number;
  maxPendingEvents?: number;
  concurrency?: number;
}

interface Waiter {
  batch: IngestBatch;
  size: number;
  resolve: (receipt: SinkReceipt) => void;
  reject: (error: unknown) => void;
}

export class GroupCommitSink implements EventSink {
  private readonly maxBatchEvents: number;
  private readonly maxWaitMs: number;
  private readonly maxPendingEvents: number;
  private readonly concurrency: number;
  private waiting: Waiter[] = [];
  private waitingEvents = 0;
  private inFlight = 0;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private idle: Array<() => void> = [];
  private readonly writer: EventWriter;

  constructor(writer: EventWriter, options: GroupCommitOptions = {}) {
    this.writer = writer;
    this.maxBatchEvents = options.maxBatchEvents ?? 1000;
    this.maxWaitMs = options.maxWaitMs ?? 2;
    this.maxPendingEvents = options.maxPendingEvents ?? 50_000;
    this.concurrency = options.concurrency ?? 4;
  }

  /** Events waiting for a write (not yet in flight). */
  get pending(): number {
    return this.waitingEvents;
  }

  send(batch: IngestBatch): Promise<SinkReceipt> {
    // A failure record weighs like an event: it is a row to write.
    const size = Math.max(1, batch.events.length + batch.failures.length);
    if (this.waitingEvents + size > this.maxPendingEvents) {
      return Promise.reject(
        new PreciseError('unavailable', 'ingest buffer is full; retry shortly', { retry_after_seconds: 1 }),
      );
    }
    return new Promise<SinkReceipt>((resolve, reject) => {
      this.waiting.push({ batch, size, resolve, reject });
      this.waitingEvents += size;
      if (this.waitingEvents >= this.maxBatchEvents) this.drain();
      else this.timer ??= setTimeout(() => this.drain(), this.maxWaitMs);
    });
  }

  private drain(): void {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    while (this.inFlight < this.concurrency && this.waiting.length > 0) {
      const group = this.takeGroup();
      this.inFlight += 1;
      void this.write(group).finally(() => {
        this.inFlight -= 1;
        if (this.waiting.length > 0) this.drain();
        else if (this.inFlight === 0) this.idle.splice(0).forEach((resolve) => resolve());
      });
    }
  }

  /** Takes waiters, in arrival order, up to one write's worth of events (at least one waiter). */
  private takeGroup(): Waiter[] {
    let count = 0;
    let taken = 0;
    while (taken < this.waiting.length && (taken === 0 || count + this.waiting[taken]!.size <= this.maxBatchEvents)) {
      count += this.waiting[taken]!.size;
      taken += 1;
    }
    this.waitingEvents -= count;
    return this.waiting.splice(0, taken);
  }

  private async write(group: Waiter[]): Promise<void> {
    const combined: IngestBatch = {
      events: group.flatMap((waiter) => waiter.batch.events),
      failures: group.flatMap((waiter) => waiter.batch.failures),
    };
    try {
      const { unique, repeat } = dedupeBatch(combined);
      // one request's bad row is isolated: the other requests of this write are stored all the same
      const result = await writeIsolating(this.writer, unique);
      const outcomes = outcomesOf(combined, repeat, result);
      let offset = 0;
      for (const waiter of group) {
        const count = waiter.batch.events.length;
        waiter.resolve({ outcomes: outcomes.slice(offset, offset + count) });
        offset += count;
      }
    } catch (error) {
      const failure = new PreciseError('unavailable', 'the event store did not confirm the write; retry', {
        retry_after_seconds: 1,
      });
      console.error('ingest: group write failed:', error);
      for (const waiter of group) waiter.reject(failure);
    }
  }

  /** Writes whatever is waiting and resolves when nothing is in flight. */
  async close(): Promise<void> {
    if (this.waiting.length > 0) this.drain();
    if (this.inFlight === 0 && this.waiting.length === 0) return;
    await new Promise<void>((resolve) => this.idle.push(resolve));
  }
}
