import type { Database } from '../db/port.ts';
import { normaliseEvent, type CanonicalEvent, type EventContext } from '../events/canonical.ts';
import { pixelInput } from '../events/pixel-params.ts';
import { sqlEventWriter } from './writer.ts';

/**
 * Failed events: listing them, and replaying them through the same validation and the same
 * dedup as live ingestion. A replayed input without an event id reuses the id assigned when it
 * first failed, so replaying twice stores it once. A replay keeps the original arrival time for
 * defaults and bounds, and enters the log now (received_at), so incremental jobs see it.
 */
export interface FailedEventRow {
  id: string;
  org_id: string;
  source: string;
  reason_code: string;
  reason: string;
  field: string | null;
  payload: string;
  received_at: Date;
  replay_count: number;
  replayed_at: Date | null;
  replay_result: ReplayResult | null;
  properties: { payload_format?: string; context?: EventContext; assigned_event_id?: string };
}

export type ReplayResult =
  | { ok: true; event_id: string; outcome: 'stored' | 'duplicate' }
  | { ok: false; code: string; message: string; field?: string };

export interface FailedEventFilter {
  orgId?: string;
  ids?: string[];
  /** include rows already replayed successfully */
  all?: boolean;
  limit?: number;
}

export async function listFailedEvents(db: Database, filter: FailedEventFilter = {}): Promise<FailedEventRow[]> {
  const { rows } = await db.query<FailedEventRow>(
    `select id, org_id, source, reason_code, reason, field, payload, received_at, replay_count, replayed_at,
            replay_result, properties
     from public.failed_events
     where ($1::uuid is null or org_id = $1)
       and ($2::uuid[] is null or id = any($2))
       and ($3 or replay_result is null or not (replay_result ->> 'ok')::boolean)
     order by received_at, id
     limit $4`,
    [filter.orgId ?? null, filter.ids ?? null, filter.all ?? false, filter.limit ?? 100],
  );
  return rows;
}

/** The input a failed row held, as the endpoint that refused it would have read it. */
function inputOf(row: FailedEventRow): unknown {
  const format = row.properties.payload_format ?? 'json';
  if (format === 'query') return pixelInput(new URLSearchParams(row.payload));
  const parsed: unknown = JSON.parse(row.payload);
  if (format === 'canonical') return canonicalToInput(parsed as CanonicalEvent);
  // beacons default the type as the pixel does
  if (row.source === 'beacon' && typeof parsed === 'object' && parsed !== null && !('type' in parsed)) {
    return { ...parsed, type: 'impression' };
  }
  return parsed;
}

function canonicalToInput(event: CanonicalEvent): Record<string, unknown> {
  const input: Record<string, unknown> = {
    event_id: event.event_id,
    type: event.type,
    occurred_at: event.occurred_at,
    properties: event.properties,
  };
  for (const field of ['campaign_id', 'creative_id', 'user_key', 'click_id', 'value', 'currency', 'status'] as const) {
    if (event[field] !== null && event[field] !== undefined) input[field] = event[field];
  }
  if (event.asset_ids?.length) input.asset_ids = event.asset_ids;
  return input;
}

export interface ReplayProgress {
  done: number;
  total: number;
}

export async function replayFailedEvents(
  db: Database,
  filter: FailedEventFilter = {},
  onProgress?: (progress: ReplayProgress) => void,
): Promise<{ replayed: number; stored: number; duplicates: number; refused: number }> {
  const rows = await listFailedEvents(db, { ...filter, limit: filter.limit ?? 10_000 });
  const writer = sqlEventWriter(db);
  const summary = { replayed: 0, stored: 0, duplicates: 0, refused: 0 };
  const chunkSize = 500;
  for (let start = 0; start < rows.length; start += chunkSize) {
    const chunk = rows.slice(start, start + chunkSize);
    const results = new Map<string, ReplayResult>();
    const events: Array<{ row: FailedEventRow; event: CanonicalEvent }> = [];
    for (const row of chunk) {
      const normalised = normaliseReplay(row);
      if (normalised.ok) events.push({ row, event: normalised.event });
      else results.set(row.id, { ok: false, ...normalised.rejection });
    }
    if (events.length > 0) {
      const result = await writer.write({ events: events.map((e) => e.event), failures: [] });
      for (const { row, event } of events) {
        const key = `${event.org_id} ${event.event_id}`;
        const failed = result.failed.get(key);
        results.set(
          row.id,
          failed
            ? { ok: false, code: 'db_rejected', message: failed }
            : { ok: true, event_id: event.event_id, outcome: result.duplicates.has(key) ? 'duplicate' : 'stored' },
        );
      }
    }
    await db.query(
      `update public.failed_events f
       set replay_count = f.replay_count + 1, replayed_at = now(), replay_result = r.result
       from jsonb_to_recordset($1::jsonb) as r(id uuid, result jsonb)
       where f.id = r.id`,
      [JSON.stringify([...results].map(([id, result]) => ({ id, result })))],
    );
    for (const result of results.values()) {
      summary.replayed += 1;
      if (!result.ok) summary.refused += 1;
      else if (result.outcome === 'stored') summary.stored += 1;
      else summary.duplicates += 1;
    }
    onProgress?.({ done: Math.min(start + chunkSize, rows.length), total: rows.length });
  }
  return summary;
}

function normaliseReplay(row: FailedEventRow) {
  let input: unknown;
  try {
    input = inputOf(row);
  } catch {
    return { ok: false as const, rejection: { code: 'bad_request', message: 'the stored payload is not valid JSON' } };
  }
  const context: EventContext = row.properties.context ?? { source: row.source };
  const normalised = normaliseEvent(input, {
    orgId: row.org_id,
    receivedAt: new Date(row.received_at),
    context: { ...context, replayed_from: row.id },
    assignedEventId: row.properties.assigned_event_id,
  });
  if (normalised.ok) {
    // It enters the log now; the first arrival stays in the context.
    normalised.event.context = { ...normalised.event.context, first_received_at: normalised.event.received_at };
    normalised.event.received_at = new Date().toISOString();
  }
  return normalised;
}
