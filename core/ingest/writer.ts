import type { Queryable } from '../db/port.ts';
import { eventKey, type EventOutcome, type IngestBatch } from './batch.ts';

/**
 * Writes one batch through public.ingest_events, in one round trip, and says what happened to
 * each event. Two implementations: SQL (pg or PGlite, Hyperdrive) and supabase-js rpc.
 */
export interface IngestResult {
  inserted: number;
  /** 'org_id event_id' keys already stored */
  duplicates: Set<string>;
  /** keys the database refused (they went to failed_events), with the reason */
  failed: Map<string, string>;
  failuresStored: number;
}

export interface EventWriter {
  write(batch: IngestBatch): Promise<IngestResult>;
}

interface RawResult {
  inserted: number;
  duplicates: Array<[string, string]>;
  failed: Array<[string, string, string]>;
  failures_stored: number;
}

export function parseIngestResult(raw: RawResult): IngestResult {
  return {
    inserted: raw.inserted,
    duplicates: new Set(raw.duplicates.map(([org, id]) => `${org} ${id}`)),
    failed: new Map(raw.failed.map(([org, id, reason]) => [`${org} ${id}`, reason])),
    failuresStored: raw.failures_stored,
  };
}

export function sqlEventWriter(db: Queryable): EventWriter {
  return {
    async write(batch) {
      // Sent as text and cast: drivers that learn the parameter is jsonb would encode the
      // JSON string a second time.
      const { rows } = await db.query<{ result: RawResult }>('select public.ingest_events($1::text::jsonb) as result', [
        JSON.stringify(batch),
      ]);
      return parseIngestResult(rows[0]!.result);
    },
  };
}

/**
 * Removes repeats of a key within one batch (the database function expects each key once) and
 * tells, for every input position, whether it was a repeat.
 */
export function dedupeBatch(batch: IngestBatch): { unique: IngestBatch; repeat: boolean[] } {
  const seen = new Set<string>();
  const repeat = batch.events.map((event) => {
    const key = eventKey(event);
    if (seen.has(key)) return true;
    seen.add(key);
    return false;
  });
  return { unique: { events: batch.events.filter((_, i) => !repeat[i]), failures: batch.failures }, repeat };
}

/** The outcome of each event of a batch, from the write's result. */
export function outcomesOf(batch: IngestBatch, repeat: boolean[], result: IngestResult): EventOutcome[] {
  return batch.events.map((event, i) => {
    if (repeat[i]) return 'duplicate';
    const key = eventKey(event);
    if (result.failed.has(key)) return 'failed';
    return result.duplicates.has(key) ? 'duplicate' : 'stored';
  });
}
