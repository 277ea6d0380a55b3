import type { Queryable } from '../db/port.ts';
import { callRpc, type SupabaseClient } from '../db/supabase.ts';
import { boundedJson } from '../events/json-bounds.ts';
import { eventKey, failureRecord, type EventOutcome, type IngestBatch } from './batch.ts';

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

/** What public.ingest_events returns (ingest_webhook adds `replayed`). */
export interface RawIngestResult {
  inserted: number;
  duplicates: Array<[string, string]>;
  failed: Array<[string, string, string]>;
  failures_stored: number;
}

export function parseIngestResult(raw: RawIngestResult): IngestResult {
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
      const { rows } = await db.query<{ result: RawIngestResult }>('select public.ingest_events($1::text::jsonb) as result', [
        JSON.stringify(batch),
      ]);
      return parseIngestResult(rows[0]!.result);
    },
  };
}

export function supabaseEventWriter(client: SupabaseClient): EventWriter {
  return {
    write: async (batch) => parseIngestResult(await callRpc<RawIngestResult>(client, 'ingest_events', { p_batch: batch })),
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

/**
 * Did the database refuse the rows sent (SQLSTATE class 22, data exception, or 23, integrity),
 * rather than fail itself? Only such a refusal is isolated; anything else fails the write.
 */
export function isRowFault(error: unknown): boolean {
  if (typeof error !== 'object' || error === null) return false;
  const { code, sqlstate } = error as { code?: unknown; sqlstate?: unknown };
  const state = typeof sqlstate === 'string' ? sqlstate : code;
  return typeof state === 'string' && /^2[23][0-9A-Z]{3}$/.test(state);
}

/**
 * Writes a batch so that rows the database refuses harm no one else: when the whole write is
 * refused for its data (something validation did not catch, e.g. text the JSON cast rejects),
 * the batch is halved until each refused event stands alone; that event is stored as a failed
 * event and reported failed, and every other event is written. About 2·log2(n) writes per bad
 * event; a database that is down fails the write at once, not n times.
 */
export async function writeIsolating(writer: EventWriter, batch: IngestBatch): Promise<IngestResult> {
  try {
    return await writer.write(batch);
  } catch (error) {
    if (!isRowFault(error)) throw error;
    if (batch.events.length === 0) throw error; // failure records are made storable: never theirs
    if (batch.events.length === 1 && batch.failures.length === 0) return storeAsFailed(writer, batch.events[0]!, error);
    const half = Math.ceil(batch.events.length / 2);
    const first = await writeIsolating(writer, { events: batch.events.slice(0, half), failures: [] });
    const second = await writeIsolating(writer, { events: batch.events.slice(half), failures: [] });
    const failures = batch.failures.length > 0 ? await writer.write({ events: [], failures: batch.failures }) : undefined;
    return mergeResults([first, second, ...(failures ? [failures] : [])]);
  }
}

async function storeAsFailed(writer: EventWriter, event: IngestBatch['events'][number], error: unknown): Promise<IngestResult> {
  const reason = error instanceof Error ? error.message : String(error);
  const failure = failureRecord({
    orgId: event.org_id,
    source: event.context?.source ?? 'ingest',
    rejection: { code: 'db_rejected', message: `the database refused this event: ${reason}` },
    payload: boundedJson(event),
    payloadFormat: 'canonical',
    receivedAt: new Date(event.received_at),
  });
  const stored = await writer.write({ events: [], failures: [failure] });
  return { inserted: 0, duplicates: new Set(), failed: new Map([[eventKey(event), reason]]), failuresStored: stored.failuresStored };
}

function mergeResults(results: IngestResult[]): IngestResult {
  return {
    inserted: results.reduce((sum, result) => sum + result.inserted, 0),
    duplicates: new Set(results.flatMap((result) => [...result.duplicates])),
    failed: new Map(results.flatMap((result) => [...result.failed])),
    failuresStored: results.reduce((sum, result) => sum + result.failuresStored, 0),
  };
}
