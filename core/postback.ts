import { createHash } from 'node:crypto';
import type { CanonicalEvent } from './events/canonical.ts';
import type { Queryable } from './db/port.ts';
import { PreciseError } from './errors.ts';

/**
 * S2S postbacks speak each network's dialect. This module turns one postback's parameters
 * (query string, form or JSON, merged) into the canonical input: canonical names, the usual
 * aliases, and a per-token map (`param_map` in the token's properties) for anything else.
 */
export const POSTBACK_FIELDS = ['click_id', 'event', 'value', 'currency', 'txid', 'status'] as const;
type PostbackField = (typeof POSTBACK_FIELDS)[number];

export const POSTBACK_ALIASES: Record<string, PostbackField> = {
  clickid: 'click_id',
  subid: 'click_id',
  cid: 'click_id',
  cnv_id: 'click_id',
  payout: 'value',
  sum: 'value',
  revenue: 'value',
  tid: 'txid',
  transaction_id: 'txid',
  cnv_status: 'status',
};

export const POSTBACK_STATUSES = ['pending', 'approved', 'rejected'] as const;

// What trackers send when a macro was not filled in: {clickid}, ${x}, (click-ts), [CLICK_ID], %%CLICK_ID%%.
const MACRO = /\$?\{[^{}]*\}|\([A-Za-z][\w.-]*\)|\[[A-Za-z][\w.-]*\]|%%[^%]+%%/;

export interface PostbackParams {
  fields: Partial<Record<PostbackField, string>>;
  /** everything else the network sent, kept in properties */
  extra: Record<string, string>;
}

export function readPostbackParams(pairs: Array<[string, string]>, paramMap: unknown): PostbackParams {
  const map = isStringMap(paramMap) ? paramMap : {};
  const fields: PostbackParams['fields'] = {};
  const extra: Record<string, string> = {};
  for (const [name, value] of pairs) {
    const macro = MACRO.exec(value);
    if (macro) {
      throw new PreciseError('validation_failed', `parameter ${name} holds the unreplaced macro ${macro[0]}: fix the postback template`, {
        field: name,
        reason: 'unreplaced_macro',
      });
    }
    const field = canonicalName(name, map);
    if (!field) {
      extra[name] = value;
      continue;
    }
    const earlier = fields[field];
    if (earlier !== undefined && earlier !== value) {
      throw new PreciseError('validation_failed', `${field} was given twice with different values (${earlier}, ${value})`, {
        field: name,
        reason: 'conflicting_parameters',
      });
    }
    fields[field] = value;
  }
  return { fields, extra };
}

function canonicalName(name: string, map: Record<string, string>): PostbackField | undefined {
  const mapped = map[name];
  if (mapped && (POSTBACK_FIELDS as readonly string[]).includes(mapped)) return mapped as PostbackField;
  if ((POSTBACK_FIELDS as readonly string[]).includes(name)) return name as PostbackField;
  return POSTBACK_ALIASES[name.toLowerCase()];
}

function isStringMap(value: unknown): value is Record<string, string> {
  return typeof value === 'object' && value !== null && Object.values(value).every((v) => typeof v === 'string');
}

/**
 * The canonical input of a postback. Its event id is derived from (click, txid, type, status),
 * so a network's retry of the same postback is the same event, and a status change a new one.
 */
export function postbackInput({ fields, extra }: PostbackParams, statusMap?: unknown): Record<string, unknown> {
  if (!fields.click_id) throw new PreciseError('validation_failed', 'click_id is required (or clickid, subid, cid, cnv_id)', { field: 'click_id', reason: 'missing_field' });
  // a network's own status words, mapped by the token's status_map (e.g. {"lead": "pending", "sale": "approved"})
  const sent = fields.status?.toLowerCase();
  const status = (sent && isStringMap(statusMap) ? (statusMap[sent] ?? sent) : (sent ?? 'approved')).toLowerCase();
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
  return {
    event_id: postbackEventId(fields.click_id, txid, type, status),
    type,
    click_id: fields.click_id,
    status,
    ...(value !== undefined ? { value } : {}),
    ...(fields.currency ? { currency: fields.currency.toUpperCase() } : {}),
    properties,
  };
}

export function postbackEventId(clickId: string, txid: string | undefined, type: string, status: string): string {
  return `pb_${createHash('sha256').update(`${clickId}\n${txid ?? ''}\n${type}\n${status}`).digest('hex').slice(0, 40)}`;
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
