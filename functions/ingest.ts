import type { Context } from 'hono';
import { v7 as uuidv7 } from 'uuid';
import {
  normaliseEvent,
  UserContextSchema,
  type CanonicalEvent,
  type EventContext,
  type Rejection,
  type UserContextInput,
} from '../core/events/canonical.ts';
import { enrichRequest, enrichUserContext, serverContext } from '../core/events/enrich.ts';
import { boundedJson } from '../core/events/json-bounds.ts';
import { failureRecord, type EventOutcome, type FailureRecord } from '../core/ingest/batch.ts';
import type { AppEnv } from './env.ts';

/** The shared middle of every ingestion route: enrich once, validate and normalise each event. */
export function requestContext(c: Context<AppEnv>, source: string): EventContext {
  const services = c.get('services');
  return enrichRequest(
    {
      source,
      userAgent: c.req.header('user-agent'),
      ip: services.clientIp(c),
      cf: (c.req.raw as { cf?: Record<string, unknown> }).cf ?? null,
      headers: { get: (name) => c.req.header(name) ?? null },
      consent: c.req.query('consent'),
      anonymousParam: c.req.query('anon'),
      keyId: c.get('key')?.id,
      now: new Date(),
    },
    services.ipHashSecret,
  );
}

/**
 * Server-side endpoints (batch API, postbacks, webhooks): the request's context holds nothing of
 * the calling server's user agent, IP or geo; each event may carry its end user's own.
 */
export function serverRequestContext(c: Context<AppEnv>, source: string): ServerSideContext {
  const services = c.get('services');
  const base = serverContext({
    source,
    headers: { get: (name) => c.req.header(name) ?? null },
    anonymousParam: c.req.query('anon'),
    keyId: c.get('key')?.id,
  });
  const now = new Date();
  return { base, userContext: (given) => enrichUserContext(given, base, services.ipHashSecret, now) };
}

export interface ServerSideContext {
  base: EventContext;
  userContext: (given: UserContextInput) => EventContext;
}

export interface RejectedEvent extends Rejection {
  index: number;
}

export interface NormalisedRequest {
  events: CanonicalEvent[];
  /** the input position of each event in `events` */
  positions: number[];
  failures: FailureRecord[];
  rejected: RejectedEvent[];
}

export function normaliseInputs(
  inputs: unknown[],
  options: {
    orgId: string;
    source: string;
    context: EventContext;
    /** server-side endpoints: the context of an event carrying its end user's own */
    userContext?: (given: UserContextInput) => EventContext;
    receivedAt: Date;
    payloadFormat: 'json' | 'query';
    /** the raw text to keep for a refused input (JSON inputs: the input itself, bounded) */
    rawOf?: (index: number) => string;
    /** what one input adds to the context (e.g. a webhook item's unmatched campaign) */
    contextOf?: (index: number) => Partial<EventContext> | undefined;
    /** what a refused input's replay needs besides (see failureRecord) */
    replayOf?: (index: number) => Record<string, unknown>;
  },
): NormalisedRequest {
  const result: NormalisedRequest = { events: [], positions: [], failures: [], rejected: [] };
  inputs.forEach((input, index) => {
    const { context, userContext } = itemContexts(options, options.contextOf?.(index));
    const normalised = normaliseEvent(input, { orgId: options.orgId, receivedAt: options.receivedAt, context, userContext });
    if (normalised.ok) {
      result.events.push(normalised.event);
      result.positions.push(index);
      return;
    }
    result.rejected.push({ index, ...normalised.rejection });
    const kept = keptForReplay(input, context, userContext);
    result.failures.push(
      failureRecord({
        orgId: options.orgId,
        source: options.source,
        rejection: normalised.rejection,
        payload: options.rawOf ? options.rawOf(index) : boundedJson(kept.input),
        payloadFormat: options.payloadFormat,
        receivedAt: options.receivedAt,
        context: kept.context,
        // A replay of an input without an id reuses this one, so replaying twice counts once.
        assignedEventId: hasEventId(input) ? undefined : uuidv7(),
        replay: options.replayOf?.(index),
      }),
    );
  });
  return result;
}

function itemContexts(
  options: { context: EventContext; userContext?: (given: UserContextInput) => EventContext },
  extra: Partial<EventContext> | undefined,
): { context: EventContext; userContext?: (given: UserContextInput) => EventContext } {
  if (!extra) return options;
  const { userContext } = options;
  return {
    context: { ...options.context, ...extra },
    userContext: userContext && ((given) => ({ ...userContext(given), ...extra })),
  };
}

/**
 * What a refused input keeps for its replay: an end user's context is enriched now and kept
 * enriched (its raw IP is never stored), and removed from the stored input.
 */
export function keptForReplay(
  input: unknown,
  context: EventContext,
  userContext?: (given: UserContextInput) => EventContext,
): { input: unknown; context: EventContext } {
  if (typeof input !== 'object' || input === null || Array.isArray(input) || !Object.hasOwn(input, 'context')) {
    return { input, context };
  }
  const { context: given, ...rest } = input as Record<string, unknown>;
  const parsed = UserContextSchema.safeParse(given);
  if (!parsed.success || !userContext) return { input: rest, context };
  return { input: rest, context: userContext(parsed.data) };
}

function hasEventId(input: unknown): boolean {
  return typeof input === 'object' && input !== null && typeof (input as { event_id?: unknown }).event_id === 'string';
}

/** The refusals of a request: its inputs refused by validation, then events the store refused or did not take. */
export function withStoreRefusals(normalised: NormalisedRequest, outcomes: EventOutcome[]): RejectedEvent[] {
  const refusedByStore = outcomes.flatMap((outcome, i): RejectedEvent[] => {
    const index = normalised.positions[i]!;
    if (outcome === 'failed') return [{ index, code: 'db_rejected', message: 'the database refused this event; see failed events' }];
    if (outcome === 'unavailable') return [{ index, code: 'unavailable', message: 'not accepted (the queue failed): send this event again' }];
    return [];
  });
  return [...normalised.rejected, ...refusedByStore].sort((a, b) => a.index - b.index);
}

export function countOutcomes(outcomes: EventOutcome[]) {
  return {
    accepted: outcomes.filter((outcome) => outcome === 'stored').length,
    duplicates: outcomes.filter((outcome) => outcome === 'duplicate').length,
  };
}

/**
 * JSON events of one request (beacon, batch API): validated as the request's organization,
 * enriched once, and sent with their refusals in one write; durable when it resolves.
 */
export async function ingestJsonEvents(c: Context<AppEnv>, inputs: unknown[], source: 'beacon' | 'batch') {
  // the beacon is the user's browser; the batch API a server sending for its users
  const server = source === 'batch' ? serverRequestContext(c, source) : undefined;
  const normalised = normaliseInputs(inputs, {
    orgId: c.get('key').org_id,
    source,
    context: server ? server.base : requestContext(c, source),
    userContext: server?.userContext,
    receivedAt: new Date(),
    payloadFormat: 'json',
  });
  const receipt = await c.get('services').sink.send({ events: normalised.events, failures: normalised.failures });
  return { normalised, receipt };
}
