import type { CanonicalEvent, Rejection } from '../events/canonical.ts';
import { LIMITS } from '../events/limits.ts';
import { boundedJson, storableText } from '../events/json-bounds.ts';

/**
 * What one write carries to public.ingest_events: canonical events, and records of refused
 * input for failed_events (so a refusal is stored in the same round trip as the rest).
 */
export interface FailureRecord {
  org_id: string;
  source: string;
  reason_code: string;
  reason: string;
  field: string | null;
  payload: string;
  payload_truncated: boolean;
  received_at: string;
  /** how to replay: payload_format ('query' | 'json' | 'canonical'), context, assigned_event_id */
  properties: Record<string, unknown>;
}

export interface IngestBatch {
  events: CanonicalEvent[];
  failures: FailureRecord[];
}

/**
 * Where each event of a send ended up: stored (or queued), a duplicate, refused by the database
 * (kept as a failed event), or not taken at all (the sender must send it again).
 */
export type EventOutcome = 'stored' | 'duplicate' | 'failed' | 'unavailable';

export interface SinkReceipt {
  outcomes: EventOutcome[];
}

export interface EventSink {
  /** Resolves once the batch is durable (committed, or accepted by the queue); throws otherwise. */
  send(batch: IngestBatch): Promise<SinkReceipt>;
  /** Finishes what is buffered (graceful shutdown). */
  close?(): Promise<void>;
}

export const eventKey = (event: Pick<CanonicalEvent, 'org_id' | 'event_id'>) => `${event.org_id} ${event.event_id}`;

export function failureRecord(input: {
  orgId: string;
  source: string;
  rejection: Rejection;
  payload: string;
  payloadFormat: 'query' | 'json' | 'canonical';
  receivedAt: Date;
  context?: unknown;
  assignedEventId?: string;
  /** what else its replay needs to take the same path (e.g. the postback token, the integration) */
  replay?: Record<string, unknown>;
}): FailureRecord {
  // A refusal is often about text Postgres cannot store (a NUL, half a surrogate pair): what is
  // kept of it is made storable, so the record of one bad input can never fail a write.
  const { text, truncated } = boundPayload(storableText(input.payload));
  const properties = {
    payload_format: input.payloadFormat,
    ...(input.context ? { context: input.context } : {}),
    ...(input.assignedEventId ? { assigned_event_id: input.assignedEventId } : {}),
    ...input.replay,
  };
  return {
    org_id: input.orgId,
    source: input.source,
    reason_code: input.rejection.code,
    reason: storableText(input.rejection.message),
    field: input.rejection.field === undefined ? null : storableText(input.rejection.field),
    payload: text,
    payload_truncated: truncated,
    received_at: input.receivedAt.toISOString(),
    properties: JSON.parse(boundedJson(properties)) as Record<string, unknown>,
  };
}

/** Cuts a payload to the failed-event bound on a character boundary. */
function boundPayload(payload: string): { text: string; truncated: boolean } {
  const bytes = new TextEncoder().encode(payload);
  if (bytes.length <= LIMITS.failedPayloadBytes) return { text: payload, truncated: false };
  const cut = new TextDecoder().decode(bytes.slice(0, LIMITS.failedPayloadBytes)).replace(/\uFFFD$/, '');
  return { text: cut, truncated: true };
}
