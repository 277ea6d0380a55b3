import { Webhook } from 'standardwebhooks';
import { PreciseError } from '../errors.ts';
import { parseIp } from '../ip.ts';
import { hashKey } from '../keys.ts';
import { deriveSecret } from '../secrets.ts';

/**
 * An organization's alert webhook (organizations.properties.alerts), its signing secret, and
 * the Standard Webhooks signature of a delivery (https://www.standardwebhooks.com):
 *
 *   "alerts": {"webhook_url": "https://hooks.example.com/precise",
 *              "events": ["creative_fatigue_detected", "creative_fatigue_cleared"]}
 *
 * The secret is whsec_ + base64 of 32 bytes derived from the server secret, the organization and
 * a version (alert_webhooks.secret_version), never stored; the database keeps its SHA-256 only,
 * to notice a process whose server secret differs.
 */
export const ALERT_EVENTS = ['creative_fatigue_detected', 'creative_fatigue_cleared'] as const;
export type AlertEvent = (typeof ALERT_EVENTS)[number];

export interface AlertSettings {
  webhookUrl: URL;
  events: AlertEvent[];
}

export interface AlertTargetOptions {
  /** development: http(s) to localhost, 127.0.0.1 or [::1] (ALERT_WEBHOOK_ALLOW_LOCALHOST); never other private addresses */
  allowLocalhost?: boolean;
}

const MAX_URL_LENGTH = 2048;

const refuse = (field: string, message: string) => new PreciseError('validation_failed', `${field} ${message}`, { field });

/** The settings as they are in organizations.properties.alerts, checked; a PreciseError names the field. */
export function parseAlertSettings(alerts: unknown, options: AlertTargetOptions = {}): AlertSettings {
  if (typeof alerts !== 'object' || alerts === null || Array.isArray(alerts)) {
    throw refuse('alerts', 'must be an object: {"webhook_url": "https://…", "events": [...]}');
  }
  const unknown = Object.keys(alerts).find((key) => key !== 'webhook_url' && key !== 'events');
  if (unknown !== undefined) throw refuse(`alerts.${unknown}`, 'is not a setting (webhook_url, events)');
  const { webhook_url: url, events } = alerts as { webhook_url?: unknown; events?: unknown };
  return { webhookUrl: parseWebhookUrl(url, options), events: parseEvents(events) };
}

function parseEvents(events: unknown): AlertEvent[] {
  if (events === undefined || events === null) return [...ALERT_EVENTS];
  if (!Array.isArray(events) || events.length === 0) {
    throw refuse('alerts.events', `must be a non-empty array of ${ALERT_EVENTS.join(', ')}`);
  }
  const bad = events.find((event) => !ALERT_EVENTS.includes(event as AlertEvent));
  if (bad !== undefined) throw refuse('alerts.events', `has ${JSON.stringify(bad)}: the events are ${ALERT_EVENTS.join(', ')}`);
  return [...new Set(events as AlertEvent[])];
}

const LOCALHOST = /^(localhost|127\.0\.0\.1|\[::1\])$/i;

/**
 * An endpoint we may POST to: an absolute https URL, no credentials in it, its host a domain name
 * with a dot or a public IP address (never a private, loopback, link-local or otherwise special
 * one); with allowLocalhost, also http(s) to localhost, 127.0.0.1 or [::1]. A name's addresses
 * are checked again when it is resolved, at each send (core/alerts/transport.ts).
 */
export function parseWebhookUrl(value: unknown, options: AlertTargetOptions = {}): URL {
  const field = 'alerts.webhook_url';
  if (typeof value !== 'string' || value.length === 0) throw refuse(field, 'is required: the https URL to POST alerts to');
  if (value.length > MAX_URL_LENGTH) throw refuse(field, `must be at most ${MAX_URL_LENGTH} characters`);
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw refuse(field, 'must be an absolute URL, e.g. https://hooks.example.com/precise');
  }
  // a trailing dot names the same host ("localhost." is localhost)
  const host = url.hostname.replace(/\.$/, '');
  const local = LOCALHOST.test(host);
  if (local && !options.allowLocalhost) {
    throw refuse(field, 'must not point at this machine (localhost; ALERT_WEBHOOK_ALLOW_LOCALHOST=true allows it in development)');
  }
  if (url.protocol !== 'https:' && !(url.protocol === 'http:' && local)) {
    throw refuse(field, `must be https (got ${url.protocol.replace(/:$/, '')})`);
  }
  if (url.username || url.password) throw refuse(field, 'must not carry credentials (user:password@)');
  if (!local) {
    const address = parseIp(host.replace(/^\[(.*)\]$/, '$1'));
    if (address && address.range() !== 'unicast') {
      throw refuse(field, `must be a public address, not ${address.toString()} (${address.range()})`);
    }
    if (!address && (!host.includes('.') || /\.(localhost|local|internal|home\.arpa)$/i.test(host))) {
      throw refuse(field, 'must name a public host (a domain name with a dot, not a local or internal name)');
    }
  }
  return url;
}

/** May a resolved address be connected to? Public unicast, or loopback when allowed. */
export function isAllowedAddress(address: string, options: AlertTargetOptions = {}): boolean {
  const ip = parseIp(address);
  if (!ip) return false;
  const range = ip.range();
  return range === 'unicast' || (range === 'loopback' && options.allowLocalhost === true);
}

/** The organization's signing secret of a version (whsec_ + base64 of 32 bytes, as Standard Webhooks has it). */
export function alertSigningSecret(serverSecret: string, orgId: string, version: number): string {
  const derived = deriveSecret(serverSecret, 'alert-signing', `${orgId}:${version}`);
  return `whsec_${Buffer.from(derived, 'base64url').toString('base64')}`;
}

/** What the database keeps of a secret: its SHA-256, hex. */
export const alertSecretHash = (secret: string) => hashKey(secret);

/** How long after a rotation the previous secret still signs too (receivers switch over meanwhile). */
export const ROTATION_OVERLAP_MS = 24 * 3_600_000;

/**
 * The webhook-signature header: `v1,<base64 HMAC-SHA256 of "id.timestamp.body">` with each secret,
 * space-separated (during a rotation the receiver accepts either), signed by the standardwebhooks
 * library, the reference implementation receivers verify with.
 */
export function signatureHeader(secrets: string[], id: string, at: Date, body: string): string {
  return secrets.map((secret) => new Webhook(secret).sign(id, at, body)).join(' ');
}
