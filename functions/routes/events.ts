import { Hono } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { PreciseError } from '../../core/errors.ts';
import { LIMITS } from '../../core/events/limits.ts';
import type { AppEnv } from '../env.ts';
import { requireKey } from '../middleware/auth.ts';
import { countOutcomes, ingestJsonEvents, withStoreRefusals, type RejectedEvent } from '../ingest.ts';

/**
 * POST /v1/events: the batch API for server-side senders. `{ "events": [...] }`, up to 1,000
 * events and 1 MB, with a secret key holding the ingest scope. The valid events land even when
 * others are refused: 202 `{ accepted, duplicates, rejected: [{ index, code, message, field }] }`.
 */
export const eventsRoutes = new Hono<AppEnv>();

eventsRoutes.post(
  '/',
  bodyLimit({
    maxSize: LIMITS.batchBytes,
    onError: () => {
      throw new PreciseError('payload_too_large', `a batch body is at most ${LIMITS.batchBytes} bytes`, { field: 'body' });
    },
  }),
  requireKey({ kinds: ['secret'], scope: 'ingest', from: 'bearer' }),
  async (c) => {
    const events = parseEnvelope(await c.req.text());
    const { normalised, receipt } = await ingestJsonEvents(c, events, 'batch');
    const rejected: RejectedEvent[] = withStoreRefusals(normalised, receipt.outcomes);
    const counts = countOutcomes(receipt.outcomes);
    if (counts.accepted + counts.duplicates === 0) {
      throw new PreciseError('validation_failed', `all ${events.length} events were refused`, {
        field: rejected[0]?.field,
        ...counts,
        rejected,
      });
    }
    return c.json({ ...counts, rejected }, 202);
  },
);

function parseEnvelope(text: string): unknown[] {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw new PreciseError('bad_request', 'the body is not valid JSON', { field: 'body' });
  }
  const events = (body as { events?: unknown } | null)?.events;
  if (typeof body !== 'object' || body === null || Array.isArray(body) || !Array.isArray(events)) {
    throw new PreciseError('bad_request', 'the body must be { "events": [ ... ] }', { field: 'events' });
  }
  if (events.length === 0) throw new PreciseError('bad_request', 'events is empty', { field: 'events' });
  if (events.length > LIMITS.batchEvents) {
    throw new PreciseError('payload_too_large', `at most ${LIMITS.batchEvents} events per batch (got ${events.length})`, {
      field: 'events',
    });
  }
  return events;
}
