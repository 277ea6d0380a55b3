import { Hono, type Context } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { PreciseError } from '../../core/errors.ts';
import { failureRecord } from '../../core/ingest/batch.ts';
import { normalisePostback, splitContextParams, transitionRefused } from '../../core/postback.ts';
import type { AppEnv } from '../env.ts';
import { keptForReplay, serverRequestContext } from '../ingest.ts';

/**
 * GET or POST /v1/postback/:token: an S2S conversion from an ad server, affiliate network or
 * MMP. The token (a pb_ key) is in the path for networks that cannot send headers. Parameters
 * come from the query string and a form or JSON body. Answers 200 JSON with the event id and
 * whether it was a duplicate; a conversion counts once however often the network retries.
 * The calling network is never taken for the user: the user's IP and agent come as parameters.
 */
export const postbackRoutes = new Hono<AppEnv>();

const POSTBACK_BODY_BYTES = 64 * 1024;

postbackRoutes.on(
  ['GET', 'POST'],
  '/:token',
  bodyLimit({
    maxSize: POSTBACK_BODY_BYTES,
    onError: () => {
      throw new PreciseError('payload_too_large', `a postback body is at most ${POSTBACK_BODY_BYTES} bytes`, { field: 'body' });
    },
  }),
  async (c) => {
    const services = c.get('services');
    const key = await services.keys.resolve(c.req.param('token'));
    if (!key) throw new PreciseError('unauthorized', 'unknown, revoked or expired postback token', { field: 'token' });
    if (key.kind !== 'postback') throw new PreciseError('forbidden', 'this is not a postback token (pb_…)', { field: 'token' });
    c.set('key', key);

    const pairs = await postbackPairs(c);
    const receivedAt = new Date();
    const server = serverRequestContext(c, 'postback');
    const refuse = async (error: PreciseError): Promise<never> => {
      // kept as a postback: its pairs without the end user's context (kept enriched, never a raw
      // IP), and its token, whose maps a replay applies again
      const split = splitContextParams(pairs, key.properties.param_map);
      await services.sink.send({
        events: [],
        failures: [
          failureRecord({
            orgId: key.org_id,
            source: 'postback',
            rejection: { code: String(error.details.reason ?? error.code), message: error.message, field: error.details.field as string | undefined },
            payload: new URLSearchParams(split.kept).toString(),
            payloadFormat: 'query',
            receivedAt,
            context: keptForReplay({ context: split.context }, server.base, server.userContext).context,
            replay: { key_id: key.id },
          }),
        ],
      });
      throw error;
    };

    const normalised = normalisePostback(pairs, key, {
      orgId: key.org_id,
      receivedAt,
      context: server.base,
      userContext: server.userContext,
      keepUserContext: true,
    });
    if (!normalised.ok) return refuse(normalised.error);
    const { event } = normalised;
    const result = await services.postbacks.record(event);
    if (result.outcome === 'refused') return refuse(transitionRefused(result, event));
    return c.json({
      event_id: event.event_id,
      duplicate: result.outcome === 'duplicate',
      status: result.status,
      status_change: result.outcome === 'stored' && result.previous_status !== null,
      unmatched_click: result.unmatched_click ?? false,
    });
  },
);

/** Query parameters, then a form or JSON body (flat values only), in the order received. */
async function postbackPairs(c: Context<AppEnv>): Promise<Array<[string, string]>> {
  const pairs = [...new URL(c.req.url).searchParams];
  if (c.req.method !== 'POST') return pairs;
  const text = await c.req.text();
  if (!text.trim()) return pairs;
  const type = c.req.header('content-type') ?? '';
  if (type.includes('application/json') || /^\s*\{/.test(text)) {
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      throw new PreciseError('bad_request', 'the body is not valid JSON', { field: 'body' });
    }
    if (typeof body !== 'object' || body === null || Array.isArray(body)) {
      throw new PreciseError('bad_request', 'a JSON postback body must be an object', { field: 'body' });
    }
    for (const [name, value] of Object.entries(body)) {
      if (value === null || value === undefined) continue;
      if (typeof value === 'object') throw new PreciseError('bad_request', `${name} must be a plain value`, { field: name });
      pairs.push([name, String(value)]);
    }
    return pairs;
  }
  return [...pairs, ...new URLSearchParams(text)];
}
