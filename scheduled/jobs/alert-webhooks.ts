import {
  alertSecretHash,
  alertSigningSecret,
  parseAlertSettings,
  ROTATION_OVERLAP_MS,
  signatureHeader,
  type AlertSettings,
} from '../../core/alerts/settings.ts';
import { postWebhook } from '../../core/alerts/transport.ts';
import type { Queryable } from '../../core/db/port.ts';
import { PreciseError } from '../../core/errors.ts';
import type { JobDefinition } from '../job.ts';

/**
 * Alert webhooks (supabase/migrations/20261126140000_alert_webhooks.sql): enqueues a delivery
 * for each alert event that arrived (private.alert_enqueue_step, its own watermark), then sends
 * the due ones to their organization's endpoint, signed the Standard Webhooks way (webhook-id:
 * the event id, webhook-timestamp, webhook-signature), and records each attempt. A 2xx answer
 * delivers; 410 Gone disables the URL; anything else (another status, no answer in time, a
 * refused address) is retried after 5 s, 5 min, 30 min, 2 h, 5 h, 10 h and 10 h, each ±10 %,
 * then the delivery fails. Delivery is at least once: the receiver dedups on webhook-id.
 */
export interface AlertWebhooksInput {
  /** the server secret the signing secrets derive from (given by the composition root, never logged) */
  serverSecret?: string;
  /** development only: endpoints on localhost (ALERT_WEBHOOK_ALLOW_LOCALHOST) */
  allowLocalhost?: boolean;
  /** the clock of the schedule (which deliveries are due, when the next attempt is); default now */
  now?: string | number | Date;
  /** deliveries sent per run (default 200) */
  limit?: number;
  /** deadline of one POST (default 10 s) */
  timeoutMs?: number;
  /** refused: there is no range to recompute */
  from?: string;
  to?: string;
}

/** The waits after the 1st, 2nd, … failed attempt; after the last one the delivery fails. */
export const RETRY_DELAYS_MS = [5_000, 300_000, 1_800_000, 7_200_000, 18_000_000, 36_000_000, 36_000_000];
export const MAX_ATTEMPTS = RETRY_DELAYS_MS.length + 1;
/** a claimed delivery is another run's again after this (a run that died) */
const LEASE_SECONDS = 600;
const CONCURRENCY = 8;

interface Claimed {
  org_id: string;
  event_id: string;
  attempts: number;
  payload: { type: string } & Record<string, unknown>;
  url: string;
  alerts: unknown;
  secret_version: number | null;
  secret_hash: string | null;
  secret_rotated_at: Date | null;
  disabled_url: string | null;
}

/** What became of one delivery, as private.alert_record_attempts takes it. */
interface Outcome {
  org_id: string;
  event_id: string;
  url: string | null;
  status: 'pending' | 'delivered' | 'failed';
  /** an attempt was made (it counts against the schedule) */
  counted: boolean;
  at: string;
  http_status: number | null;
  error: string | null;
  next_attempt_at: string | null;
  disable: boolean;
}

/** When the next attempt is due after `attempts` failed ones, with ±10 % jitter; null: no more. */
export function nextAttemptAt(now: number, attempts: number, random: () => number = Math.random): Date | null {
  const delay = RETRY_DELAYS_MS[attempts - 1];
  return delay === undefined ? null : new Date(now + delay * (0.9 + 0.2 * random()));
}

export async function runAlertWebhooks(db: Queryable, input: AlertWebhooksInput = {}) {
  if (input.from || input.to) {
    throw new PreciseError('invalid_argument', 'alert-webhooks takes no --from/--to: it sends what is due', { field: input.from ? 'from' : 'to' });
  }
  if (!input.serverSecret) {
    throw new PreciseError('config_invalid', 'alert-webhooks needs the server secret (PRECISE_SECRET) its signing secrets derive from');
  }
  const now = input.now === undefined ? new Date() : new Date(input.now);
  if (Number.isNaN(now.getTime())) throw new PreciseError('invalid_argument', 'now must be a time', { field: 'now' });
  const limit = input.limit ?? 200;

  const { rows } = await db.query<{ result: { skipped: boolean; enqueued?: number } }>('select private.alert_enqueue_step($1::timestamptz) as result', [now.toISOString()]);
  const step = rows[0]!.result;
  if (step.skipped) return step;

  const { rows: claimed } = await db.query<Claimed>('select * from private.alert_claim_deliveries($1::timestamptz, $2, $3::interval)', [
    now.toISOString(),
    limit,
    `${LEASE_SECONDS} seconds`,
  ]);
  const summary = { skipped: false, enqueued: Number(step.enqueued ?? 0), answered: 0, delivered: 0, retrying: 0, failed: 0, disabled: 0 };
  const settingsErrors = new Map<string, { org_id: string; field: string; message: string }>();
  const context: AttemptContext = { serverSecret: input.serverSecret, allowLocalhost: input.allowLocalhost ?? false, now, timeoutMs: input.timeoutMs ?? 10_000 };
  await eachConcurrently(claimed, CONCURRENCY, async (delivery) => {
    const { outcome, settingsError } = await attempt(delivery, context);
    // recorded one by one, so a run that dies midway resends only what it had not recorded
    await db.query('select private.alert_record_attempts($1::jsonb)', [JSON.stringify([outcome])]);
    if (settingsError) settingsErrors.set(delivery.org_id, { org_id: delivery.org_id, ...settingsError });
    if (outcome.http_status !== null) summary.answered += 1;
    if (outcome.status === 'delivered') summary.delivered += 1;
    if (outcome.status === 'pending') summary.retrying += 1;
    if (outcome.status === 'failed') summary.failed += 1;
    if (outcome.disable) summary.disabled += 1;
  });
  const { rows: pruned } = await db.query<{ pruned: string }>('select private.alert_prune_deliveries($1::timestamptz) as pruned', [now.toISOString()]);
  return {
    ...summary,
    claimed: claimed.length,
    pruned: Number(pruned[0]!.pruned),
    ...(settingsErrors.size > 0 ? { settings_errors: [...settingsErrors.values()] } : {}),
  };
}

interface AttemptContext {
  serverSecret: string;
  allowLocalhost: boolean;
  now: Date;
  timeoutMs: number;
}

/** One delivery: checks the settings and the secret as they are now, then POSTs. */
async function attempt(delivery: Claimed, context: AttemptContext): Promise<{ outcome: Outcome; settingsError?: { field: string; message: string } }> {
  const base = { org_id: delivery.org_id, event_id: delivery.event_id, at: context.now.toISOString(), http_status: null, next_attempt_at: null, disable: false };
  const stop = (error: string, url: string | null = null): Outcome => ({ ...base, url, status: 'failed', counted: false, error });
  /** a failed attempt: again later, or failed for good after the last one */
  const retry = (error: string, url: string | null, httpStatus: number | null = null): Outcome => {
    const next = nextAttemptAt(context.now.getTime(), delivery.attempts + 1);
    return {
      ...base,
      url,
      status: next ? 'pending' : 'failed',
      counted: true,
      http_status: httpStatus,
      error: next ? error : `${error} (gave up after ${MAX_ATTEMPTS} attempts)`,
      next_attempt_at: next?.toISOString() ?? null,
    };
  };

  if (delivery.alerts === null || delivery.alerts === undefined) return { outcome: stop('alerts are no longer configured (organizations.properties.alerts)') };
  let settings: AlertSettings;
  try {
    settings = parseAlertSettings(delivery.alerts, { allowLocalhost: context.allowLocalhost });
  } catch (error) {
    if (!(error instanceof PreciseError)) throw error;
    // the settings may be fixed meanwhile: retried on the schedule
    const field = String(error.details.field ?? 'alerts');
    return { outcome: retry(`bad settings, nothing sent: ${error.message}`, null), settingsError: { field, message: error.message } };
  }
  const url = settings.webhookUrl.href;
  if (!settings.events.includes(delivery.payload.type as never)) return { outcome: stop(`alerts.events no longer asks for ${delivery.payload.type}`, url) };
  if (delivery.disabled_url === url) return { outcome: stop(`${url} answered 410 Gone: alerts to it are off until they are set again`, url) };
  if (!delivery.secret_version || !delivery.secret_hash) return { outcome: stop('no signing secret was issued (precise alerts set)', url) };

  const secret = alertSigningSecret(context.serverSecret, delivery.org_id, delivery.secret_version);
  if (alertSecretHash(secret) !== delivery.secret_hash) {
    return { outcome: retry('nothing sent: this process derives another signing secret than the one issued (its PRECISE_SECRET differs)', url) };
  }
  const secrets = [secret];
  const rotatedAt = delivery.secret_rotated_at ? new Date(delivery.secret_rotated_at).getTime() : null;
  if (delivery.secret_version > 1 && rotatedAt !== null && context.now.getTime() - rotatedAt < ROTATION_OVERLAP_MS) {
    secrets.push(alertSigningSecret(context.serverSecret, delivery.org_id, delivery.secret_version - 1));
  }

  const body = JSON.stringify(delivery.payload);
  // the wall clock, whatever the schedule's: receivers check it against theirs
  const sentAt = new Date();
  const headers = {
    'content-type': 'application/json',
    'user-agent': 'Precise-Alerts/1',
    'webhook-id': delivery.event_id,
    'webhook-timestamp': String(Math.floor(sentAt.getTime() / 1000)),
    'webhook-signature': signatureHeader(secrets, delivery.event_id, sentAt, body),
  };
  let answer;
  try {
    answer = await postWebhook(settings.webhookUrl, headers, body, { allowLocalhost: context.allowLocalhost, timeoutMs: context.timeoutMs });
  } catch (error) {
    return { outcome: retry(`no answer: ${(error as Error).message}`, url) };
  }
  const { status } = answer;
  if (status >= 200 && status < 300) return { outcome: { ...base, url, status: 'delivered', counted: true, http_status: status, error: null } };
  if (status === 410) {
    return { outcome: { ...base, url, status: 'failed', counted: true, http_status: status, error: '410 Gone: the endpoint asked for no more alerts; this URL is disabled', disable: true } };
  }
  const said = answer.body.replace(/[\u0000-\u001f\u007f]+/g, ' ').trim().slice(0, 200);
  const redirect = status >= 300 && status < 400 ? ' (redirects are not followed)' : '';
  return { outcome: retry(`HTTP ${status}${redirect}${said ? `: ${said}` : ''}`, url, status) };
}

/** Runs `fn` over the items, at most `concurrency` at a time. */
async function eachConcurrently<T>(items: T[], concurrency: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const lanes = Array.from({ length: Math.min(concurrency, items.length) }, async () => {
    while (next < items.length) await fn(items[next++]!);
  });
  await Promise.all(lanes);
}

export const alertWebhooksJob: JobDefinition<AlertWebhooksInput> = {
  name: 'alert-webhooks',
  cron: '* * * * *',
  run: (db, input) => runAlertWebhooks(db, input),
};
