import { createHash } from 'node:crypto';
import { normaliseEvent, type CanonicalEvent, type NormaliseOptions } from './events/canonical.ts';
import type { Queryable } from './db/port.ts';
import { callRpc, type SupabaseClient } from './db/supabase.ts';
import { PreciseError } from './errors.ts';

/**
 * S2S postbacks speak each network's dialect. This module turns one postback's parameters
 * (query string, form or JSON, merged) into the canonical input: canonical names, the usual
 * aliases, and a per-token map (`param_map` in the token's properties) for anything else.
 */
export const POSTBACK_FIELDS = ['click_id', 'event', 'value', 'currency', 'txid', 'status'] as const;
type PostbackField = (typeof POSTBACK_FIELDS)[number];

/**
 * The end user's own context, as networks pass it on (their click's IP and user agent): it goes
 * to the event's input `context` and is enriched as a pixel's request would be. The IP is
 * truncated and hashed, never stored raw.
 */
export const POSTBACK_CONTEXT_FIELDS = ['ip', 'user_agent', 'country', 'region', 'city'] as const;
type ContextField = (typeof POSTBACK_CONTEXT_FIELDS)[number];
type Target = { kind: 'field'; name: PostbackField } | { kind: 'context'; name: ContextField };

// Maps, not objects: a parameter named "constructor" or "__proto__" is no entry.
export const POSTBACK_ALIASES: ReadonlyMap<string, Target> = new Map([
  ...(
    [
      ['clickid', 'click_id'],
      ['subid', 'click_id'],
      ['cid', 'click_id'],
      ['cnv_id', 'click_id'],
      ['payout', 'value'],
      ['sum', 'value'],
      ['revenue', 'value'],
      ['tid', 'txid'],
      ['transaction_id', 'txid'],
      ['cnv_status', 'status'],
    ] as const
  ).map(([alias, name]) => [alias, { kind: 'field', name }] as [string, Target]),
  ...(
    [
      ['user_ip', 'ip'],
      ['ip_address', 'ip'],
      ['device_ip', 'ip'],
      ['ua', 'user_agent'],
      ['useragent', 'user_agent'],
      ['device_ua', 'user_agent'],
      ['country_code', 'country'],
    ] as const
  ).map(([alias, name]) => [alias, { kind: 'context', name }] as [string, Target]),
]);

export const POSTBACK_STATUSES = ['pending', 'approved', 'rejected'] as const;

// What trackers send when a macro was not filled in: {clickid}, ${x}, (click-ts), [CLICK_ID], %%CLICK_ID%%.
const MACRO = /\$?\{[^{}]*\}|\([A-Za-z][\w.-]*\)|\[[A-Za-z][\w.-]*\]|%%[^%]+%%/;

export interface PostbackParams {
  fields: Partial<Record<PostbackField, string>>;
  /** the end user's context the network passed on */
  context: Partial<Record<ContextField, string>>;
  /** everything else the network sent, kept in properties */
  extra: Record<string, string>;
}

/** A token's param_map as a Map of what it names: a canonical field, or a context field (`ip` or `context.ip`). */
export function parseParamMap(paramMap: unknown): Map<string, Target> {
  const map = new Map<string, Target>();
  if (typeof paramMap !== 'object' || paramMap === null || Array.isArray(paramMap)) return map;
  for (const [name, value] of Object.entries(paramMap)) {
    const target = typeof value === 'string' ? targetOf(value) : undefined;
    if (target) map.set(name, target);
  }
  return map;
}

function targetOf(name: string): Target | undefined {
  if ((POSTBACK_FIELDS as readonly string[]).includes(name)) return { kind: 'field', name: name as PostbackField };
  const context = name.startsWith('context.') ? name.slice('context.'.length) : name;
  if ((POSTBACK_CONTEXT_FIELDS as readonly string[]).includes(context)) return { kind: 'context', name: context as ContextField };
  return undefined;
}

function targetFor(name: string, map: Map<string, Target>): Target | undefined {
  return map.get(name) ?? targetOf(name) ?? POSTBACK_ALIASES.get(name.toLowerCase());
}

/**
 * A postback's pairs split for its failed-event record: the end user's context (one value per
 * field, to be kept enriched) and the other pairs (the stored payload, so a raw IP is never kept).
 */
export function splitContextParams(pairs: Array<[string, string]>, paramMap: unknown): { kept: Array<[string, string]>; context: Record<string, string> } {
  const map = parseParamMap(paramMap);
  const kept: Array<[string, string]> = [];
  const context = new Map<string, string>();
  for (const [name, value] of pairs) {
    const target = targetFor(name, map);
    if (target?.kind !== 'context' || !contextValueTaken(target, value)) kept.push([name, value]);
    else if (value !== '' && !context.has(target.name)) context.set(target.name, value);
  }
  return { kept, context: Object.fromEntries(context) };
}

export function readPostbackParams(pairs: Array<[string, string]>, paramMap: unknown): PostbackParams {
  const map = parseParamMap(paramMap);
  const params: PostbackParams = { fields: {}, context: {}, extra: {} };
  for (const [name, value] of pairs) {
    const macro = MACRO.exec(value);
    if (macro) {
      throw new PreciseError('validation_failed', `parameter ${name} holds the unreplaced macro ${macro[0]}: fix the postback template`, {
        field: name,
        reason: 'unreplaced_macro',
      });
    }
    const target = targetFor(name, map);
    if (!target || !contextValueTaken(target, value)) {
      // defined, not assigned: a parameter named __proto__ is kept as one
      Object.defineProperty(params.extra, name, { value, enumerable: true, writable: true, configurable: true });
      continue;
    }
    const into: Record<string, string> = target.kind === 'field' ? params.fields : params.context;
    const earlier = into[target.name];
    if (earlier !== undefined && earlier !== value) {
      throw new PreciseError('validation_failed', `${target.name} was given twice with different values (${earlier}, ${value})`, {
        field: name,
        reason: 'conflicting_parameters',
      });
    }
    into[target.name] = value;
  }
  return params;
}

/** A country that is no ISO alpha-2 code ("USA", "Germany") stays a property rather than refuse a conversion. */
function contextValueTaken(target: Target, value: string): boolean {
  return target.kind !== 'context' || target.name !== 'country' || value === '' || /^[A-Za-z]{2}$/.test(value);
}

/** A network's status word through the token's status_map (own entries only), lowercased. */
function mappedStatus(sent: string | undefined, statusMap: unknown): string {
  if (sent === undefined) return 'approved';
  const word = sent.toLowerCase();
  if (typeof statusMap !== 'object' || statusMap === null || !Object.hasOwn(statusMap, word)) return word;
  const mapped = (statusMap as Record<string, unknown>)[word];
  return typeof mapped === 'string' ? mapped.toLowerCase() : word;
}

/**
 * The canonical input of a postback. Its event id is derived from (click, txid, type, status),
 * so a network's retry of the same postback is the same event, and a status change a new one.
 */
export function postbackInput({ fields, context, extra }: PostbackParams, statusMap?: unknown): Record<string, unknown> {
  if (!fields.click_id) throw new PreciseError('validation_failed', 'click_id is required (or clickid, subid, cid, cnv_id)', { field: 'click_id', reason: 'missing_field' });
  // a network's own status words, mapped by the token's status_map (e.g. {"lead": "pending", "sale": "approved"})
  const status = mappedStatus(fields.status, statusMap);
  if (!(POSTBACK_STATUSES as readonly string[]).includes(status)) {
    throw new PreciseError('validation_failed', `status must be pending, approved or rejected (got ${fields.status})`, { field: 'status', reason: 'invalid_field' });
  }
  let value: number | undefined;
  if (fields.value !== undefined && fields.value !== '') {
    value = Number(fields.value);
    if (!/^-?\d+(\.\d+)?$/.test(fields.value.trim()) || !Number.isFinite(value)) {
      throw new PreciseError('validation_failed', `value must be a finite number (got ${fields.value})`, { field: 'value', reason: 'invalid_field' });
    }
  }
  const type = fields.event || 'conversion';
  const txid = fields.txid || undefined;
  const properties: Record<string, unknown> = { ...extra, ...(txid ? { txid } : {}) };
  // empty values are what a network sends for an unknown IP or agent: absent
  const given = Object.fromEntries(Object.entries(context).filter(([, text]) => text !== ''));
  return {
    event_id: postbackEventId(fields.click_id, txid, type, status),
    type,
    click_id: fields.click_id,
    status,
    ...(value !== undefined ? { value } : {}),
    ...(fields.currency ? { currency: fields.currency.toUpperCase() } : {}),
    properties,
    ...(Object.keys(given).length > 0 ? { context: given } : {}),
  };
}

export function postbackEventId(clickId: string, txid: string | undefined, type: string, status: string): string {
  return `pb_${createHash('sha256').update(`${clickId}\n${txid ?? ''}\n${type}\n${status}`).digest('hex').slice(0, 40)}`;
}

export type NormalisedPostback = { ok: true; event: CanonicalEvent } | { ok: false; error: PreciseError };

/**
 * One postback's parameters to its canonical event under its token's maps: what the endpoint
 * does, and what a replay of a refused postback does again (with the token's maps as they are
 * then, and the end user's context as enriched when it first arrived).
 */
export function normalisePostback(
  pairs: Array<[string, string]>,
  token: { properties: Record<string, unknown> },
  options: NormaliseOptions & { keepUserContext: boolean },
): NormalisedPostback {
  let input: Record<string, unknown>;
  try {
    input = postbackInput(readPostbackParams(pairs, token.properties.param_map), token.properties.status_map);
  } catch (error) {
    if (error instanceof PreciseError) return { ok: false, error };
    throw error;
  }
  if (!options.keepUserContext) delete input.context;
  const normalised = normaliseEvent(input, options);
  if (normalised.ok) return normalised;
  const { code, message, field } = normalised.rejection;
  return { ok: false, error: new PreciseError('validation_failed', message, { field, reason: code }) };
}

/** The 409 of a status change record_postback refused. */
export function transitionRefused(result: PostbackResult, event: CanonicalEvent): PreciseError {
  return new PreciseError(
    'conflict',
    `status ${result.status} → ${event.status} is not allowed (pending → approved → rejected, pending → rejected)`,
    { field: 'status', reason: 'invalid_status_transition', current_status: result.status },
  );
}

export interface PostbackResult {
  outcome: 'stored' | 'duplicate' | 'refused';
  status: string;
  previous_status: string | null;
  unmatched_click?: boolean;
}

/** Records one postback through public.record_postback (dedup and status rules under a lock). */
export interface PostbackRecorder {
  record(event: CanonicalEvent): Promise<PostbackResult>;
}

export function sqlPostbackRecorder(db: Queryable): PostbackRecorder {
  return {
    async record(event) {
      const { rows } = await db.query<{ result: PostbackResult }>('select public.record_postback($1::text::jsonb) as result', [
        JSON.stringify(event),
      ]);
      return rows[0]!.result;
    },
  };
}

export function supabasePostbackRecorder(client: SupabaseClient): PostbackRecorder {
  return { record: (event) => callRpc<PostbackResult>(client, 'record_postback', { p_event: event }) };
}
