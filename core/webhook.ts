import { createHash } from 'node:crypto';
import { z } from 'zod';
import { PreciseError } from './errors.ts';
import { deriveSecret, hexEqual, hmacHex } from './secrets.ts';

/**
 * Signed DSP webhooks: `x-precise-signature: t=<unix>,v1=<hex HMAC-SHA256 of "t.body">`, within
 * five minutes, compared in constant time; and the declarative mapping of a DSP's payload to
 * canonical events (integrations.properties.mapping).
 */
export const SIGNATURE_TOLERANCE_SECONDS = 300;

export function webhookSecret(serverSecret: string, integrationId: string, version = 1): string {
  return `whsec_${deriveSecret(serverSecret, 'webhook-signing', `${integrationId}:${version}`)}`;
}

export function signWebhook(secret: string, timestamp: number, body: string): string {
  return `t=${timestamp},v1=${hmacHex(secret, `${timestamp}.${body}`)}`;
}

/** True when one of the header's v1 signatures matches and its time is within the tolerance. */
export function verifyWebhookSignature(secret: string, header: string | undefined, body: string, nowSeconds: number): boolean {
  if (!header) return false;
  let timestamp: number | undefined;
  const signatures: string[] = [];
  for (const part of header.split(',')) {
    const [name, value] = part.trim().split('=', 2);
    if (name === 't' && value && /^\d{1,12}$/.test(value)) timestamp = Number(value);
    else if (name === 'v1' && value) signatures.push(value);
  }
  if (timestamp === undefined || Math.abs(nowSeconds - timestamp) > SIGNATURE_TOLERANCE_SECONDS) return false;
  const expected = hmacHex(secret, `${timestamp}.${body}`);
  // every candidate is compared, so the time taken does not tell which one failed
  return signatures.map((signature) => hexEqual(signature, expected)).includes(true);
}

/** What identifies a delivery for replay protection: the hash of its signature header. */
export const deliveryId = (header: string) => createHash('sha256').update(header).digest('hex');

// --- the declarative mapping -------------------------------------------------------------------

const TRANSFORMS = ['unix_seconds', 'unix_ms', 'micros', 'cents', 'number', 'string', 'lowercase', 'uppercase'] as const;

const FieldRuleSchema = z.union([
  z.string().min(1),
  z.strictObject({
    path: z.string().min(1).optional(),
    const: z.unknown().optional(),
    transform: z.enum(TRANSFORMS).optional(),
    map: z.record(z.string(), z.unknown()).optional(),
    lookup: z.literal('external_campaign_id').optional(),
  }),
]);

export const WebhookMappingSchema = z.strictObject({
  /** where the events are: "events", "data.rows", "seatbid[*].bid"; "" for a body that is one event */
  events_path: z.string().default('events'),
  /** canonical field (or properties.<name>) → a path in the event item ($root.… for the body) or a rule */
  fields: z.record(z.string().regex(/^[a-z_]+(\.[A-Za-z0-9_]+)?$/), FieldRuleSchema),
});

export type WebhookMapping = z.infer<typeof WebhookMappingSchema>;

export function parseMapping(value: unknown): WebhookMapping {
  const parsed = WebhookMappingSchema.safeParse(value);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new PreciseError('invalid_argument', `mapping.${issue.path.join('.')}: ${issue.message}`, { field: 'mapping' });
  }
  return parsed.data;
}

type Segment = string | number | '*';

function parsePath(path: string): Segment[] {
  const segments: Segment[] = [];
  for (const part of path.split('.')) {
    const match = /^([^[\]]*)((?:\[(?:\d+|\*)\])*)$/.exec(part);
    if (!match) throw new PreciseError('invalid_argument', `bad path ${path}`, { field: 'mapping' });
    if (match[1]) segments.push(match[1]);
    for (const index of match[2]!.matchAll(/\[(\d+|\*)\]/g)) segments.push(index[1] === '*' ? '*' : Number(index[1]));
  }
  return segments;
}

/** Every value a path reaches; [*] fans out over an array. */
function select(value: unknown, segments: Segment[]): unknown[] {
  if (segments.length === 0) return [value];
  const [head, ...rest] = segments;
  if (head === '*') return Array.isArray(value) ? value.flatMap((item) => select(item, rest)) : [];
  if (value === null || typeof value !== 'object') return [];
  return select((value as Record<string | number, unknown>)[head as string | number], rest);
}

function valueAt(item: unknown, root: unknown, path: string): unknown {
  const fromRoot = path.startsWith('$root.');
  const segments = parsePath(fromRoot ? path.slice('$root.'.length) : path);
  return select(fromRoot ? root : item, segments)[0];
}

function transform(value: unknown, name: (typeof TRANSFORMS)[number] | undefined): unknown {
  if (value === undefined || value === null || !name) return value;
  const number = typeof value === 'number' ? value : typeof value === 'string' && value.trim() !== '' ? Number(value) : NaN;
  switch (name) {
    case 'unix_seconds':
      return Number.isFinite(number) ? Math.round(number * 1000) : value;
    case 'unix_ms':
      return Number.isFinite(number) ? Math.round(number) : value;
    case 'micros':
      return Number.isFinite(number) ? number / 1_000_000 : value;
    case 'cents':
      return Number.isFinite(number) ? number / 100 : value;
    case 'number':
      return Number.isFinite(number) ? number : value;
    case 'string':
      return String(value);
    case 'lowercase':
      return String(value).toLowerCase();
    case 'uppercase':
      return String(value).toUpperCase();
  }
}

export interface MappedItem {
  /** the canonical input (before validation) */
  input: Record<string, unknown>;
  /** the DSP's item as received, for failed_events */
  raw: unknown;
  /** an external campaign id to resolve into campaign_id */
  externalCampaignId?: string;
}

/** The DSP's payload as canonical inputs, one per item at events_path. */
export function mapPayload(body: unknown, mapping: WebhookMapping): MappedItem[] {
  // events_path names where the events are: an array (or arrays, with [*]) of items
  const items = mapping.events_path
    ? select(body, parsePath(mapping.events_path)).flatMap((found) => (Array.isArray(found) ? found : [found]))
    : [body];
  return items.map((item) => {
    const input: Record<string, unknown> = {};
    const properties: Record<string, unknown> = {};
    let externalCampaignId: string | undefined;
    for (const [target, rule] of Object.entries(mapping.fields)) {
      const spec = typeof rule === 'string' ? { path: rule } : rule;
      let value = 'const' in spec && spec.const !== undefined ? spec.const : spec.path ? valueAt(item, body, spec.path) : undefined;
      if (spec.map && value !== undefined && value !== null) value = spec.map[String(value)] ?? value;
      value = transform(value, spec.transform);
      if (value === undefined || value === null) continue;
      if (spec.lookup === 'external_campaign_id') {
        externalCampaignId = String(value);
        continue;
      }
      if (target.startsWith('properties.')) properties[target.slice('properties.'.length)] = value;
      else input[target] = value;
    }
    if (Object.keys(properties).length > 0) input.properties = { ...(input.properties as object | undefined), ...properties };
    return { input, raw: item, externalCampaignId };
  });
}

/** An id for an item that has none: the same item in a resent delivery gets the same id. */
export function webhookEventId(integrationId: string, item: unknown): string {
  return `wh_${createHash('sha256').update(`${integrationId}\n${JSON.stringify(item)}`).digest('hex').slice(0, 40)}`;
}
