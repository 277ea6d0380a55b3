import type { Queryable } from '../db/port.ts';
import { callRpc, type SupabaseClient } from '../db/supabase.ts';
import { PreciseError } from '../errors.ts';

/**
 * Reading the alert webhook's delivery log (GET /v1/alerts/deliveries, `precise alerts log`):
 * public.alert_delivery_log. No secret is in it: none is stored.
 */
export const DELIVERY_STATUSES = ['pending', 'delivered', 'failed'] as const;

export interface DeliveryRow {
  event_id: string;
  event_type: string;
  url: string;
  status: (typeof DELIVERY_STATUSES)[number];
  attempts: number;
  next_attempt_at: string | null;
  last_attempt_at: string | null;
  last_status: number | null;
  last_error: string | null;
  delivered_at: string | null;
  created_at: string;
}

export interface WebhookState {
  webhook_url: string | null;
  events: string[] | null;
  secret_version: number | null;
  secret_rotated_at: string | null;
  disabled_url: string | null;
  disabled_at: string | null;
}

interface LogAnswer {
  webhook: WebhookState | null;
  rows: DeliveryRow[];
}

export interface AlertLogReader {
  log(orgId: string, status: string | null, limit: number): Promise<LogAnswer>;
}

export function sqlAlertLogReader(db: Queryable): AlertLogReader {
  return {
    log: async (orgId, status, limit) =>
      (await db.query<{ result: LogAnswer }>('select public.alert_delivery_log($1, $2, $3) as result', [orgId, status, limit])).rows[0]!.result,
  };
}

export function supabaseAlertLogReader(client: SupabaseClient): AlertLogReader {
  return {
    log: (orgId, status, limit) => callRpc<LogAnswer>(client, 'alert_delivery_log', { p_org_id: orgId, p_status: status, p_limit: limit }),
  };
}

/** The webhook's state and its newest deliveries (at most `limit`, 1 to 1,000, default 100). */
export async function alertDeliveryLog(reader: AlertLogReader, orgId: string, query: { status?: string; limit?: string }) {
  const status = query.status || null;
  if (status !== null && !DELIVERY_STATUSES.includes(status as DeliveryRow['status'])) {
    throw new PreciseError('validation_failed', `status must be one of ${DELIVERY_STATUSES.join(', ')}`, { field: 'status' });
  }
  const text = query.limit || '100';
  const limit = Number(text);
  if (!/^\d{1,4}$/.test(text) || limit < 1 || limit > 1000) {
    throw new PreciseError('validation_failed', 'limit must be an integer from 1 to 1000', { field: 'limit' });
  }
  const answer = await reader.log(orgId, status, limit);
  const webhook = answer.webhook ?? { webhook_url: null, events: null, secret_version: null, secret_rotated_at: null, disabled_url: null, disabled_at: null };
  return { webhook, data: answer.rows, meta: { status, limit } };
}
