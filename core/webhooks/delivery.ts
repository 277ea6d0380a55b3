import { createHash, createHmac } from 'node:crypto';
import { z } from 'zod';
import { PreciseError } from '../errors.ts';
import { deriveSecret, hexEqual } from '../secrets.ts';
import { boundedJson } from '../events/json-bounds.ts';

/**
 * Signed DSP webhooks: `x-precise-signature: t=<unix>,v1=<hex HMAC-SHA256 of "t.body">`, within
 * five minutes, compared in constant time; and the declarative mapping of a DSP's payload to
 * canonical events (integrations.properties.mapping).
 */
export const SIGNATURE_TOLERANCE_SECONDS = 300;

export function webhookSecret(serverSecret: string, integrationId: string, version = 1): string {
  return `whsec_${deriveSecret(serverSecret, 'webhook-signing', `${integrationId}:${version}`)}`;
}

export function signWebhook(secret: string, timestamp: number, body: string | Uint8Array): string {
  return `t=${timestamp},v1=${signatureOf(secret, timestamp, body)}`;
}

/** Hex HMAC-SHA256 of "<t>.<body>", over the body's bytes as received. */
function signatureOf(secret: string, timestamp: number, body: string | Uint8Array): string {
  return createHmac('sha256', secret).update(`${timestamp}.`).update(body).digest('hex');
}

/**
 * The delivery's replay key when one of the header's v1 signatures matches and its time is
 * within the tolerance, else null. The key is what was verified (the time and the expected
 * signature, so the body's digest), never the header's text: the same delivery with spaces,
 * reordered parts or extra values is the same delivery.
 */
export function verifyWebhookSignature(secret: string, header: string | undefined, body: string | Uint8Array, nowSeconds: number): string | null {
  let timestamp: number | undefined;
  const signatures: string[] = [];
  for (const part of (header ?? '').split(',')) {
    const [name, value] = part.trim().split('=', 2);
    if (name === 't' && value && /^\d{1,12}$/.test(value)) timestamp = Number(value);
    else if (name === 'v1' && value) signatures.push(value);
  }
  // the HMAC is computed whatever the header says, so a malformed one costs the same time
  const expected = signatureOf(secret, timestamp ?? 0, body);
  // every candidate is compared, so the time taken does not tell which one failed
  const matched = signatures.map((signature) => hexEqual(signature, expected)).includes(true);
  if (!matched || timestamp === undefined || Math.abs(nowSeconds - timestamp) > SIGNATURE_TOLERANCE_SECONDS) return null;
  return createHash('sha256').update(`${timestamp}.${expected}`).digest('hex');
}

// --- the declarative mapping -------------------------------------------------------------------

const TRANSFORMS = ['unix_seconds', 'unix_ms', 'micros', 'cents', 'number', 'string', 'lowercase', 'uppercase'] as const;

/** The end user's context a mapping may fill (`context.ip`, ...): the input's `context`, enriched. */
export const CONTEXT_TARGETS = ['user_agent', 'ip', 'country', 'region', 'city', 'consent'] as const;

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
  /** canonical field (or properties.<name>, context.<name>) → a path in the event item ($root.… for the body) or a rule */
  fields: z
    .record(z.string().regex(/^[a-z_]+(\.[A-Za-z0-9_]+)?$/), FieldRuleSchema)
    .superRefine((fields, ctx) => {
      for (const target of Object.keys(fields)) {
        const [head, name] = target.split('.');
        if (head === 'context' && !(CONTEXT_TARGETS as readonly string[]).includes(name ?? '')) {
          ctx.addIssue({ code: 'custom', path: [target], message: `context targets are ${CONTEXT_TARGETS.map((n) => `context.${n}`).join(', ')}` });
        } else if (name !== undefined && head !== 'context' && head !== 'properties') {
          ctx.addIssue({ code: 'custom', path: [target], message: 'only properties.<name> and context.<name> are dotted targets' });
        }
      }
    }),
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

/**
 * Every value a path reaches; [*] fans out over an array. Own properties only (a path through
 * "constructor" reaches nothing). Recursive: the body is bounded (inspectJson) before mapping.
 */
function select(value: unknown, segments: Segment[]): unknown[] {
  if (segments.length === 0) return [value];
  const [head, ...rest] = segments;
  if (head === '*') return Array.isArray(value) ? value.flatMap((item) => select(item, rest)) : [];
  if (value === null || typeof value !== 'object' || !Object.hasOwn(value, head!)) return [];
  return select((value as Record<string | number, unknown>)[head as string | number], rest);
}

const ROOT = '$root.';

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
      return textOf(value) ?? boundedJson(value);
    case 'lowercase':
      return textOf(value)?.toLowerCase() ?? value;
    case 'uppercase':
      return textOf(value)?.toUpperCase() ?? value;
  }
}

/** A scalar as text; objects have none (String() would call whatever toString a payload names). */
function textOf(value: unknown): string | undefined {
  return typeof value === 'string' || typeof value === 'number' || typeof value === 'boolean' ? String(value) : undefined;
}

export interface MappedItem {
  /** the canonical input (before validation; an object when mapped); the end user's context under `context` */
  input: unknown;
  /** the DSP's item as received, without the end user's context (for failed_events) */
  raw: unknown;
  /** the values of the body ($root.… paths) the mapping read, without the end user's context: what a replay of the item needs */
  root: Record<string, unknown>;
  /** an external campaign id to resolve into campaign_id */
  externalCampaignId?: string;
}

const setOwn = (target: Record<string, unknown>, name: string, value: unknown) =>
  Object.defineProperty(target, name, { value, enumerable: true, writable: true, configurable: true });

type Rule = { path?: string; const?: unknown; transform?: (typeof TRANSFORMS)[number]; map?: Record<string, unknown>; lookup?: 'external_campaign_id' };
const ruleOf = (rule: WebhookMapping['fields'][string]): Rule => (typeof rule === 'string' ? { path: rule } : rule);

/** The body's events: items at events_path (arrays, with [*], flattened), or the body itself for "". */
export function itemsOf(body: unknown, mapping: WebhookMapping): unknown[] {
  return mapping.events_path
    ? select(body, parsePath(mapping.events_path)).flatMap((found) => (Array.isArray(found) ? found : [found]))
    : [body];
}

/**
 * The DSP's payload as canonical inputs, one per item at events_path. `root` stands for the
 * body's values when an item is mapped again without its body (a replay).
 */
export function mapPayload(body: unknown, mapping: WebhookMapping, options: { root?: Record<string, unknown> } = {}): MappedItem[] {
  const storedRoot = options.root ? new Map(Object.entries(options.root)) : undefined;
  const fromRoot = (path: string) => (storedRoot ? storedRoot.get(path) : select(body, parsePath(path))[0]);
  const items = options.root ? [body] : itemsOf(body, mapping);
  return items.map((item) => {
    const input: Record<string, unknown> = {};
    const properties: Record<string, unknown> = {};
    const context: Record<string, unknown> = {};
    const root: Record<string, unknown> = {};
    const contextPaths: Segment[][] = [];
    let externalCampaignId: string | undefined;
    for (const [target, rule] of Object.entries(mapping.fields)) {
      const spec = ruleOf(rule);
      const isContext = target.startsWith('context.');
      let value: unknown;
      if (spec.const !== undefined) value = spec.const;
      else if (spec.path?.startsWith(ROOT)) {
        value = fromRoot(spec.path.slice(ROOT.length));
        if (!isContext && value !== undefined) setOwn(root, spec.path.slice(ROOT.length), value);
      } else if (spec.path) {
        const segments = parsePath(spec.path);
        value = select(item, segments)[0];
        if (isContext) contextPaths.push(segments);
      }
      const key = textOf(value);
      if (spec.map && key !== undefined && Object.hasOwn(spec.map, key)) value = spec.map[key];
      value = transform(value, spec.transform);
      if (value === undefined || value === null) continue;
      if (spec.lookup === 'external_campaign_id') externalCampaignId = textOf(value) ?? boundedJson(value);
      else if (target.startsWith('properties.')) setOwn(properties, target.slice('properties.'.length), value);
      else if (isContext) setOwn(context, target.slice('context.'.length), value);
      else setOwn(input, target, value);
    }
    if (Object.keys(properties).length > 0) input.properties = { ...(input.properties as object | undefined), ...properties };
    if (Object.keys(context).length > 0) input.context = context;
    return { input, raw: withoutPaths(item, contextPaths), root, externalCampaignId };
  });
}

/** A copy of a (bounded) value without what the paths reach: an item kept without its user's IP. */
function withoutPaths(value: unknown, paths: Segment[][]): unknown {
  if (paths.length === 0 || value === null || typeof value !== 'object') return value;
  const copy: unknown = Array.isArray(value) ? [...value] : { ...value };
  const remove = (target: unknown, segments: Segment[]) => {
    const [head, ...rest] = segments;
    if (head === undefined || target === null || typeof target !== 'object') return;
    const keys = head === '*' ? (Array.isArray(target) ? target.map((_, index) => index) : []) : Object.hasOwn(target, head) ? [head] : [];
    for (const key of keys) {
      const record = target as Record<string | number, unknown>;
      if (rest.length === 0) {
        if (Array.isArray(record)) record[key as number] = null;
        else delete record[key];
        continue;
      }
      const child = record[key];
      if (child === null || typeof child !== 'object') continue;
      const childCopy = Array.isArray(child) ? [...child] : { ...child };
      Object.defineProperty(record, key, { value: childCopy, enumerable: true, writable: true, configurable: true });
      remove(childCopy, rest);
    }
  };
  for (const segments of paths) remove(copy, segments);
  return copy;
}

/**
 * An id for an item that has none, from what the mapping made of it (sorted keys, without the
 * end user's context and the id): the same event in a resent delivery gets the same id, even
 * with its keys reordered or a per-delivery field (a send time) the mapping does not read.
 */
export function webhookEventId(integrationId: string, input: Record<string, unknown>, externalCampaignId?: string): string {
  const { event_id: _id, context: _context, ...fields } = input;
  const basis = canonicalJson({ ...fields, ...(externalCampaignId !== undefined ? { $external_campaign_id: externalCampaignId } : {}) });
  return `wh_${createHash('sha256').update(`${integrationId}\n${basis}`).digest('hex').slice(0, 40)}`;
}

/** JSON with object keys sorted at every level (of a bounded value). */
export function canonicalJson(value: unknown): string {
  const sorted = (current: unknown): unknown => {
    if (current === null || typeof current !== 'object') return current;
    if (Array.isArray(current)) return current.map(sorted);
    return Object.fromEntries(
      Object.keys(current)
        .sort()
        .map((key) => [key, sorted((current as Record<string, unknown>)[key])]),
    );
  };
  return JSON.stringify(sorted(value)) ?? 'null';
}
