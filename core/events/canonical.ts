import { v7 as uuidv7 } from 'uuid';
import { z } from 'zod';
import { parseIp } from '../ip.ts';
import { LIMITS } from './limits.ts';
import { inspectJson, jsonDepth } from './json-bounds.ts';

/**
 * The canonical event: what every endpoint turns its input into, what the sinks carry and
 * what public.ingest_events stores. One schema for the input side (what senders may send)
 * and one type for the normalised side.
 */
export interface CanonicalEvent {
  org_id: string;
  event_id: string;
  /** 'client' when the sender chose the id (dedup by id alone), 'edge' when we generated it */
  id_source: 'client' | 'edge';
  type: string;
  occurred_at: string;
  received_at: string;
  campaign_id: string | null;
  creative_id: string | null;
  asset_ids: string[];
  user_key: string | null;
  click_id: string | null;
  value: number | null;
  currency: string | null;
  status: string | null;
  properties: Record<string, unknown>;
  context: EventContext;
}

export interface EventContext {
  source: string;
  geo?: { country?: string; region?: string; city?: string; colo?: string; asn?: number };
  device?: { type: string; browser?: string; browser_version?: string; os?: string; os_version?: string };
  bot?: boolean;
  ip?: { truncated?: string; hash?: string };
  consent?: { gpc: boolean; dnt: boolean; param?: string; limited: boolean };
  anonymous?: boolean;
  key_id?: string;
  /** set on replays: the failed event it came from, and when it first arrived */
  replayed_from?: string;
  first_received_at?: string;
  /** a DSP campaign id no campaign of the org claims (the event is kept all the same) */
  unmatched_campaign?: string;
}

const SNAKE = /^[a-z][a-z0-9_]{0,62}$/;
/** 8-4-4-4-12 hex digits, any version (what Postgres's uuid type takes): zod's guid pattern. */
export function isUuid(text: string): boolean {
  return z.regexes.guid.test(text);
}
const PRINTABLE_ID = /^[\x21-\x7e]{1,128}$/;

const currencies = new Set(Intl.supportedValuesOf('currency'));

const id = (max: number) => z.string().min(1).max(max);

/**
 * The end user's own context, sent by server-side senders (batch API, postbacks, webhooks) so
 * their event is enriched as a pixel's request would be: bot flag and device from this user
 * agent, geo from these fields, the IP truncated and hashed (never stored raw). Without it a
 * server-side event has no device and is no bot: the calling server is never the user.
 */
export const UserContextSchema = z.strictObject({
  user_agent: z.string().max(1024).optional(),
  ip: z.string().max(64).refine((text) => parseIp(text) !== null, 'must be an IPv4 or IPv6 address').optional(),
  country: z.string().regex(/^[A-Za-z]{2}$/, 'must be an ISO 3166-1 alpha-2 code, e.g. DE').optional(),
  region: z.string().min(1).max(128).optional(),
  city: z.string().min(1).max(128).optional(),
  consent: z.enum(['granted', 'denied']).optional(),
});
export type UserContextInput = z.infer<typeof UserContextSchema>;


/** What a sender may send for one event (batch API, beacon; the pixel maps its parameters onto it). */
export const EventInputSchema = z
  .strictObject({
    event_id: z.string().regex(PRINTABLE_ID, 'must be 1 to 128 printable ASCII characters').optional(),
    type: z.string().regex(SNAKE, 'must be snake_case (a-z, 0-9, _), starting with a letter'),
    occurred_at: z.union([z.iso.datetime({ offset: true }), z.number().int().nonnegative()]).optional(),
    campaign_id: z.guid('must be a UUID').nullish(),
    creative_id: id(128).nullish(),
    asset_ids: z.array(z.guid('must be a UUID')).max(LIMITS.assetIds).optional(),
    user_key: id(256).nullish(),
    click_id: id(128).nullish(),
    value: z
      .number()
      .refine((value) => Number.isFinite(value) && Math.abs(value) <= LIMITS.maxValue, `must be a finite number of at most ${LIMITS.maxValue}`)
      .nullish(),
    currency: z
      .string()
      .refine((code) => currencies.has(code), 'must be an ISO 4217 currency code, e.g. USD')
      .nullish(),
    status: z.string().regex(/^[a-z][a-z0-9_]{0,31}$/, 'must be snake_case').nullish(),
    properties: z.record(z.string(), z.unknown()).optional(),
    consent: z.enum(['granted', 'denied']).optional(),
    context: UserContextSchema.optional(),
  })
  .superRefine((event, ctx) => {
    if (event.properties) checkProperties(event.properties, ctx);
  });

export type EventInput = z.infer<typeof EventInputSchema>;

function checkProperties(properties: Record<string, unknown>, ctx: z.RefinementCtx) {
  if (Object.keys(properties).length > LIMITS.propertiesKeys) {
    ctx.addIssue({ code: 'custom', path: ['properties'], message: `at most ${LIMITS.propertiesKeys} keys` });
    return;
  }
  // depth first: the input is already bounded (inspectJson), so the walk and stringify are safe
  if (jsonDepth(properties) > LIMITS.propertiesDepth) {
    ctx.addIssue({ code: 'custom', path: ['properties'], message: `nested at most ${LIMITS.propertiesDepth} levels` });
    return;
  }
  const bytes = new TextEncoder().encode(JSON.stringify(properties)).length;
  if (bytes > LIMITS.propertiesBytes) {
    ctx.addIssue({ code: 'custom', path: ['properties'], message: `at most ${LIMITS.propertiesBytes} bytes as JSON (got ${bytes})` });
  }
}

/** One refused event: a stable code, a message for people, the offending field. */
export interface Rejection {
  code: string;
  message: string;
  field?: string;
}

/** Turns the first zod issue into a rejection that names the field. */
export function rejectionFromZod(error: z.ZodError, input: unknown): Rejection {
  const issue = error.issues[0]!;
  const field = issue.path.map(String).join('.') || undefined;
  if (issue.code === 'unrecognized_keys') {
    const keys = issue.keys.join(', ');
    return {
      code: 'unknown_field',
      message: `unknown field ${keys}: put custom data in properties`,
      field: issue.keys[0],
    };
  }
  if (issue.code === 'invalid_type' && valueAt(input, issue.path) === undefined) {
    return { code: 'missing_field', message: `${field} is required`, field };
  }
  return { code: 'invalid_field', message: field ? `${field}: ${issue.message}` : issue.message, field };
}

function valueAt(input: unknown, path: PropertyKey[]): unknown {
  let value = input;
  for (const key of path) {
    if (value === null || typeof value !== 'object') return undefined;
    value = (value as Record<PropertyKey, unknown>)[key];
  }
  return value;
}

export type Normalised = { ok: true; event: CanonicalEvent } | { ok: false; rejection: Rejection };

export interface NormaliseOptions {
  orgId: string;
  receivedAt: Date;
  context: EventContext;
  /** an id to use when the sender gave none (a replay reuses the one first assigned) */
  assignedEventId?: string;
  /**
   * Server-side endpoints: the context of an event that carries the end user's own (`context`
   * on input). Absent on client-side endpoints, where the request is the user's and an input
   * `context` is refused.
   */
  userContext?: (given: UserContextInput) => EventContext;
}

/** Bounds on one untrusted event before validation walks it: properties depth plus the envelope. */
const EVENT_JSON_BOUNDS = { maxDepth: LIMITS.propertiesDepth + 2, maxNodes: 8192 };

/** Refuses what no schema should have to walk: deep or huge values, strings Postgres cannot store. */
export function inspectEventInput(input: unknown): Rejection | null {
  const problem = inspectJson(input, EVENT_JSON_BOUNDS);
  if (!problem) return null;
  const field = problem.path || undefined;
  const message = problem.code === 'invalid_characters' ? problem.message : `${field ?? 'the event'}: ${problem.message}`;
  return { code: problem.code, message, field };
}

/** Validates one input and normalises it to the canonical event (a UUIDv7 when no id came). */
export function normaliseEvent(input: unknown, options: NormaliseOptions): Normalised {
  const unsafe = inspectEventInput(input);
  if (unsafe) return { ok: false, rejection: unsafe };
  const parsed = EventInputSchema.safeParse(input);
  if (!parsed.success) return { ok: false, rejection: rejectionFromZod(parsed.error, input) };
  const event = parsed.data;
  if (event.context && !options.userContext) {
    return {
      ok: false,
      rejection: {
        code: 'invalid_field',
        message: 'context is for server-side senders (batch API, postbacks, webhooks); here the request itself is the user\'s',
        field: 'context',
      },
    };
  }

  const received = options.receivedAt.getTime();
  const occurred = event.occurred_at === undefined ? received : new Date(event.occurred_at).getTime();
  // NaN (a time past the range of dates) fails both comparisons: test for being inside instead
  if (!(occurred <= received + LIMITS.futureSkewMs && occurred >= received - LIMITS.maxAgeMs)) {
    return {
      ok: false,
      rejection: {
        code: 'occurred_at_out_of_range',
        message: 'occurred_at must be at most 24 hours ahead and 400 days behind the time of arrival',
        field: 'occurred_at',
      },
    };
  }
  if (event.currency && event.value == null) {
    return { ok: false, rejection: { code: 'invalid_field', message: 'currency given without value', field: 'value' } };
  }

  const base = event.context && options.userContext ? options.userContext(event.context) : options.context;
  const context = applyConsent({ ...base }, event.consent ?? event.context?.consent);
  const identifiersAllowed = !context.anonymous && !context.consent?.limited;
  return {
    ok: true,
    event: {
      org_id: options.orgId,
      event_id: event.event_id ?? options.assignedEventId ?? uuidv7(),
      id_source: event.event_id ? 'client' : 'edge',
      type: event.type,
      occurred_at: new Date(occurred).toISOString(),
      received_at: options.receivedAt.toISOString(),
      campaign_id: event.campaign_id?.toLowerCase() ?? null,
      creative_id: event.creative_id ?? null,
      // an asset used twice by one event is one use
      asset_ids: [...new Set((event.asset_ids ?? []).map((asset) => asset.toLowerCase()))],
      user_key: identifiersAllowed ? (event.user_key ?? null) : null,
      click_id: event.click_id ?? null,
      value: event.value ?? null,
      currency: event.currency ?? null,
      status: event.status ?? null,
      properties: event.properties ?? {},
      context,
    },
  };
}

/** A per-event consent value refines the request's: "denied" limits processing of this event. */
function applyConsent(context: EventContext, consent: EventInput['consent']): EventContext {
  if (!consent) return context;
  const base = context.consent ?? { gpc: false, dnt: false, limited: false };
  const limited = base.gpc || base.dnt || consent === 'denied';
  const next: EventContext = { ...context, consent: { ...base, param: consent, limited } };
  return limited ? withoutIdentifiers(next) : next;
}

/** What limited processing keeps of the context: no IP in any form, geo down to the country. */
export function withoutIdentifiers(context: EventContext): EventContext {
  const { ip: _ip, geo, ...rest } = context;
  return geo?.country ? { ...rest, geo: { country: geo.country } } : rest;
}
