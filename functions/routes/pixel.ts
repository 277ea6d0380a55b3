import { Hono, type Context } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { PreciseError } from '../../core/errors.ts';
import { LIMITS } from '../../core/events/limits.ts';
import { pixelInput } from '../../core/events/pixel-params.ts';
import { toPreciseError } from '../errors.ts';
import type { AppEnv } from '../env.ts';
import { authenticate, requireKey } from '../middleware/auth.ts';
import { countOutcomes, ingestJsonEvents, normaliseInputs, requestContext, withStoreRefusals } from '../ingest.ts';

/**
 * GET /v1/px: the pixel. Answers a 43-byte transparent GIF, never cached; on bad input the same
 * GIF with a 4xx status and an x-precise-error header (an <img> shows no JSON).
 * POST /v1/px: the beacon (navigator.sendBeacon): one event or an array of up to 100, JSON in a
 * text/plain or application/json body; 204.
 */
export const pixelRoutes = new Hono<AppEnv>();

const GIF = Uint8Array.from(atob('R0lGODlhAQABAIAAAP///wAAACH5BAEAAAAALAAAAAABAAEAAAICRAEAOw=='), (ch) => ch.charCodeAt(0));

function gif(c: Context<AppEnv>, status: 200 | 400 | 401 | 403 | 413 | 429 | 503, error?: PreciseError) {
  c.header('content-type', 'image/gif');
  c.header('cache-control', 'no-store, no-cache, must-revalidate, max-age=0');
  if (error) {
    c.header('x-precise-error', error.code === 'invalid_argument' ? 'invalid_field' : error.code);
    c.header('x-precise-error-message', encodeURIComponent(error.message));
    const retryAfter = error.details.retry_after_seconds;
    if (typeof retryAfter === 'number') c.header('retry-after', String(retryAfter));
  }
  return c.body(GIF, status);
}

pixelRoutes.get('/', async (c) => {
  // Hono answers HEAD through the GET route: link checkers and prefetchers get the headers, and
  // nothing is recorded
  if (c.req.method === 'HEAD') return gif(c, 200);
  try {
    const key = await authenticate(c, { kinds: ['publishable'], from: 'query' });
    c.set('key', key);
    const params = new URL(c.req.url).searchParams;
    params.delete('key');
    const receivedAt = new Date();
    const normalised = normaliseInputs([pixelInput(params)], {
      orgId: key.org_id,
      source: 'pixel',
      context: requestContext(c, 'pixel'),
      receivedAt,
      payloadFormat: 'query',
      rawOf: () => params.toString(),
    });
    const receipt = await c.get('services').sink.send({ events: normalised.events, failures: normalised.failures });
    const rejected = normalised.rejected[0];
    if (rejected) {
      return gif(c, 400, new PreciseError('validation_failed', rejected.message, { field: rejected.field, reason: rejected.code }));
    }
    if (receipt.outcomes[0] === 'failed') {
      return gif(c, 400, new PreciseError('validation_failed', 'the database refused this event; see failed events', { reason: 'db_rejected' }));
    }
    return gif(c, 200);
  } catch (error) {
    const preciseError = toPreciseError(error);
    if (preciseError.status >= 500 && preciseError.code !== 'unavailable') console.error(`[${c.get('requestId')}]`, error);
    const status = ([400, 401, 403, 413, 429, 503] as const).find((s) => s === preciseError.status) ?? 503;
    return gif(c, status, preciseError);
  }
});

pixelRoutes.post(
  '/',
  bodyLimit({
    maxSize: LIMITS.beaconBytes,
    onError: () => {
      throw new PreciseError('payload_too_large', `a beacon body is at most ${LIMITS.beaconBytes} bytes`);
    },
  }),
  requireKey({ kinds: ['publishable'], from: 'query' }),
  async (c) => {
    const inputs = parseBeacon(await c.req.text()).map((input) =>
      // a beacon event without a type is an impression, as on the pixel
      typeof input === 'object' && input !== null && !('type' in input) ? { ...input, type: 'impression' } : input,
    );
    const { normalised, receipt } = await ingestJsonEvents(c, inputs, 'beacon');
    const refused = withStoreRefusals(normalised, receipt.outcomes);
    if (refused.length > 0) {
      const first = refused[0]!;
      throw new PreciseError('validation_failed', `${refused.length} of ${inputs.length} events refused: ${first.message}`, {
        field: first.field,
        ...countOutcomes(receipt.outcomes),
        rejected: refused,
      });
    }
    return c.body(null, 204);
  },
);

function parseBeacon(text: string): unknown[] {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw new PreciseError('bad_request', 'the body is not valid JSON', { field: 'body' });
  }
  const inputs = Array.isArray(body) ? body : [body];
  if (inputs.length === 0) throw new PreciseError('bad_request', 'no events in the body', { field: 'body' });
  if (inputs.length > LIMITS.beaconEvents) {
    throw new PreciseError('payload_too_large', `a beacon carries at most ${LIMITS.beaconEvents} events (got ${inputs.length})`, {
      field: 'body',
    });
  }
  return inputs;
}
