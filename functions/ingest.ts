import type { Context } from 'hono';
import { v7 as uuidv7 } from 'uuid';
import { normaliseEvent, type CanonicalEvent, type EventContext, type Rejection } from '../core/events/canonical.ts';
import { enrichRequest } from '../core/events/enrich.ts';
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
    receivedAt: Date;
    payloadFormat: 'json' | 'query';
    /** the raw text to keep for a refused input */
    rawOf: (index: number) => string;
  },
): NormalisedRequest {
  const result: NormalisedRequest = { events: [], positions: [], failures: [], rejected: [] };
  inputs.forEach((input, index) => {
    const normalised = normaliseEvent(input, { orgId: options.orgId, receivedAt: options.receivedAt, context: options.context });
    if (normalised.ok) {
      result.events.push(normalised.event);
      result.positions.push(index);
      return;
    }
    result.rejected.push({ index, ...normalised.rejection });
    result.failures.push(
      failureRecord({
        orgId: options.orgId,
        source: options.source,
        rejection: normalised.rejection,
        payload: options.rawOf(index),
        payloadFormat: options.payloadFormat,
        receivedAt: options.receivedAt,
        context: options.context,
        // A replay of an input without an id reuses this one, so replaying twice counts once.
        assignedEventId: hasEventId(input) ? undefined : uuidv7(),
      }),
    );
  });
  return result;
}

function hasEventId(input: unknown): boolean {
  return typeof input === 'object' && input !== null && typeof (input as { event_id?: unknown }).event_id === 'string';
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
  const normalised = normaliseInputs(inputs, {
    orgId: c.get('key').org_id,
    source,
    context: requestContext(c, source),
    receivedAt: new Date(),
    payloadFormat: 'json',
    rawOf: (index) => JSON.stringify(inputs[index]),
  });
  const receipt = await c.get('services').sink.send({ events: normalised.events, failures: normalised.failures });
  return { normalised, receipt };
}
