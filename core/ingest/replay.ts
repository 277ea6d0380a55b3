import type { Database } from '../db/port.ts';
import { PreciseError } from '../errors.ts';
import { normaliseEvent, type CanonicalEvent, type EventContext, type Rejection } from '../events/canonical.ts';
import { pixelInput } from '../events/pixel-params.ts';
import { prepareWebhookItems, sqlWebhookStore, Webhooks, webhookItems, type IntegrationRecord } from '../webhooks/integrations.ts';
import { normalisePostback, sqlPostbackRecorder, transitionRefused } from '../postback.ts';
import { eventKey } from './batch.ts';
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
  payload_truncated: boolean;
  properties: {
    payload_format?: string;
    context?: EventContext;
    assigned_event_id?: string;
    /** a postback's token */
    key_id?: string;
    /** a webhook item's integration, the body values its mapping read, or a whole body that gave no events */
    integration_id?: string;
    webhook_root?: Record<string, unknown>;
    webhook_body?: boolean;
  };
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
    `select id, org_id, source, reason_code, reason, field, payload, payload_truncated, received_at, replay_count, replayed_at,
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
  const parsed = parsedPayload(row);
  if (format === 'canonical') return canonicalToInput(parsed as CanonicalEvent);
  // beacons default the type as the pixel does
  if (row.source === 'beacon' && typeof parsed === 'object' && parsed !== null && !('type' in parsed)) {
    return { ...parsed, type: 'impression' };
  }
  return parsed;
}

function parsedPayload(row: FailedEventRow): unknown {
  if (row.payload_truncated) throw refusal('payload_truncated', 'the stored payload was cut at 64 KB: it cannot be replayed');
  try {
    return JSON.parse(row.payload);
  } catch {
    throw refusal('bad_request', 'the stored payload is not valid JSON');
  }
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
  const paths = replayPaths(db);
  const summary = { replayed: 0, stored: 0, duplicates: 0, refused: 0 };
  const chunkSize = 500;
  for (let start = 0; start < rows.length; start += chunkSize) {
    const chunk = rows.slice(start, start + chunkSize);
    const results = new Map<string, ReplayResult>();
    const plans: Array<{ row: FailedEventRow; plan: PlannedReplay }> = [];
    for (const row of chunk) {
      const plan = await planReplay(row, paths);
      if (plan.ok) plans.push({ row, plan });
      else results.set(row.id, { ok: false, ...plan.rejection });
    }
    for (const [id, result] of await paths.run(plans)) results.set(id, result);
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

/**
 * What replaying one row does: JSON and pixel events go through the event writer (one write per
 * chunk); a postback through record_postback, as it first would have (its dedup and status
 * rules). A whole webhook body may give several events.
 */
interface PlannedReplay {
  ok: true;
  via: 'events' | 'postback';
  events: CanonicalEvent[];
}
type ReplayPlan = PlannedReplay | { ok: false; rejection: Rejection };

interface ReplayPaths {
  postbackToken(keyId: string, orgId: string): Promise<{ properties: Record<string, unknown> } | null>;
  integration(id: string): Promise<IntegrationRecord | null>;
  campaignByExternalId(orgId: string, externalId: string): Promise<string | null>;
  run(plans: Array<{ row: FailedEventRow; plan: PlannedReplay }>): Promise<Map<string, ReplayResult>>;
}

function replayPaths(db: Database): ReplayPaths {
  const writer = sqlEventWriter(db);
  const recorder = sqlPostbackRecorder(db);
  const webhooks = new Webhooks(sqlWebhookStore(db));
  return {
    async postbackToken(keyId, orgId) {
      const { rows } = await db.query<{ properties: Record<string, unknown> }>(
        `select properties from public.api_keys where id = $1 and org_id = $2 and kind = 'postback'`,
        [keyId, orgId],
      );
      return rows[0] ?? null;
    },
    integration: (id) => webhooks.integration(id),
    campaignByExternalId: (orgId, externalId) => webhooks.campaignByExternalId(orgId, externalId),
    async run(plans) {
      const results = new Map<string, ReplayResult>();
      const viaWriter = plans.filter(({ plan }) => plan.via === 'events');
      const events = viaWriter.flatMap(({ plan }) => plan.events);
      const written = events.length > 0 ? await writer.write({ events, failures: [] }) : { failed: new Map<string, string>(), duplicates: new Set<string>() };
      for (const { row, plan } of viaWriter) {
        const outcomes = plan.events.map((event): ReplayResult => {
          const key = eventKey(event);
          const failed = written.failed.get(key);
          if (failed) return { ok: false, code: 'db_rejected', message: failed };
          return { ok: true, event_id: event.event_id, outcome: written.duplicates.has(key) ? 'duplicate' : 'stored' };
        });
        results.set(row.id, combined(outcomes));
      }
      for (const { row, plan } of plans.filter(({ plan }) => plan.via === 'postback')) {
        const event = plan.events[0]!;
        const result = await recorder.record(event);
        const error = result.outcome === 'refused' ? transitionRefused(result, event) : null;
        results.set(
          row.id,
          error
            ? { ok: false, code: 'invalid_status_transition', message: error.message, field: 'status' }
            : { ok: true, event_id: event.event_id, outcome: result.outcome === 'stored' ? 'stored' : 'duplicate' },
        );
      }
      return results;
    },
  };
}

/** One row's result from its events': refused if one is, stored if one was. */
function combined(outcomes: ReplayResult[]): ReplayResult {
  const refused = outcomes.find((outcome) => !outcome.ok);
  if (refused) return refused;
  const stored = outcomes.find((outcome) => outcome.ok && outcome.outcome === 'stored');
  return stored ?? outcomes[0]!;
}

class Refusal extends Error {
  readonly rejection: Rejection;
  constructor(rejection: Rejection) {
    super(rejection.message);
    this.rejection = rejection;
  }
}
const refusal = (code: string, message: string, field?: string) => new Refusal({ code, message, ...(field ? { field } : {}) });

async function planReplay(row: FailedEventRow, paths: ReplayPaths): Promise<ReplayPlan> {
  try {
    const format = row.properties.payload_format ?? 'json';
    if (row.source === 'postback' && format === 'query') return await planPostback(row, paths);
    if (row.source === 'webhook' && format === 'json' && row.properties.integration_id) return await planWebhook(row, paths);
    return planEvents(row, [inputOf(row)]);
  } catch (error) {
    if (error instanceof Refusal) return { ok: false, rejection: error.rejection };
    if (error instanceof PreciseError) {
      return { ok: false, rejection: { code: String(error.details.reason ?? error.code), message: error.message, field: error.details.field } };
    }
    throw error;
  }
}

/** The context a replay starts from: as enriched when it first arrived, marked as a replay. */
function replayContext(row: FailedEventRow): EventContext {
  const { unmatched_campaign: _unmatched, ...context } = row.properties.context ?? { source: row.source };
  return { ...context, replayed_from: row.id };
}

/** It enters the log now; the first arrival stays in the context. */
function enteringNow(event: CanonicalEvent): CanonicalEvent {
  return { ...event, context: { ...event.context, first_received_at: event.received_at }, received_at: new Date().toISOString() };
}

function planEvents(row: FailedEventRow, inputs: unknown[], contexts: Array<Partial<EventContext> | undefined> = []): ReplayPlan {
  const events: CanonicalEvent[] = [];
  for (const [index, input] of inputs.entries()) {
    const normalised = normaliseEvent(input, {
      orgId: row.org_id,
      receivedAt: new Date(row.received_at),
      context: { ...replayContext(row), ...contexts[index] },
      assignedEventId: row.properties.assigned_event_id,
    });
    if (!normalised.ok) return normalised;
    events.push(enteringNow(normalised.event));
  }
  return { ok: true, via: 'events', events };
}

/**
 * A postback again as a postback: its pairs under its token's maps as they are now (an operator
 * may have fixed them), its id derived again from what they say (as a network's retry would get
 * it), recorded through record_postback.
 */
async function planPostback(row: FailedEventRow, paths: ReplayPaths): Promise<ReplayPlan> {
  const keyId = row.properties.key_id;
  const token = keyId ? await paths.postbackToken(keyId, row.org_id) : { properties: {} };
  if (!token) throw refusal('postback_token_gone', `the postback token ${keyId} no longer exists`, 'token');
  const normalised = normalisePostback([...new URLSearchParams(row.payload)], token, {
    orgId: row.org_id,
    receivedAt: new Date(row.received_at),
    context: replayContext(row),
    // the user's context was kept enriched; what the payload still holds of it is not used
    keepUserContext: false,
  });
  if (!normalised.ok) throw normalised.error;
  return { ok: true, via: 'postback', events: [enteringNow(normalised.event)] };
}

/** A webhook item again through its integration's mapping as it is now (or a whole body that gave no events). */
async function planWebhook(row: FailedEventRow, paths: ReplayPaths): Promise<ReplayPlan> {
  const integration = await paths.integration(row.properties.integration_id!);
  if (!integration || integration.org_id !== row.org_id) {
    throw refusal('integration_gone', `the integration ${row.properties.integration_id} no longer exists`, 'integration');
  }
  const body = parsedPayload(row);
  const items = webhookItems(integration, body, row.properties.webhook_body ? undefined : { root: row.properties.webhook_root ?? {} });
  if (items.length === 0) throw refusal('no_events', 'the mapping still finds no events in this body', 'events_path');
  const prepared = await prepareWebhookItems(integration, items, paths.campaignByExternalId);
  const inputs = prepared.inputs.map((input) => {
    if (typeof input !== 'object' || input === null || Array.isArray(input)) return input;
    const { context: _context, ...rest } = input as Record<string, unknown>;
    return rest;
  });
  return planEvents(row, inputs, prepared.contexts);
}
