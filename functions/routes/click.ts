import { Hono } from 'hono';
import { v7 as uuidv7 } from 'uuid';
import { clickSignatureValid, hostAllowed, parseDestination, withClickId } from '../../core/click.ts';
import { PreciseError } from '../../core/errors.ts';
import { isUuid } from '../../core/events/canonical.ts';
import { pixelInput } from '../../core/events/pixel-params.ts';
import { deriveSecret } from '../../core/secrets.ts';
import type { AppEnv } from '../env.ts';
import { normaliseInputs, requestContext } from '../ingest.ts';
import { requireKey } from '../middleware/auth.ts';

/**
 * GET /v1/click: records a click with a new click_id (UUIDv7), durably, then answers 302 to the
 * destination with {click_id} substituted or pclid= appended. The destination must be signed
 * (`sig`, HMAC-SHA256 with the key's click-signing secret over url, cmp and crv) or its host on
 * the campaign's allow-list: never an open redirect. Takes the pixel's parameters besides.
 */
export const clickRoutes = new Hono<AppEnv>();

clickRoutes.get('/', requireKey({ kinds: ['publishable'], from: 'query' }), async (c) => {
  const key = c.get('key');
  const services = c.get('services');
  const raw = c.req.query('url');
  const destination = parseDestination(raw);
  const campaignId = c.req.query('cmp') || null;
  const creativeId = c.req.query('crv') || null;

  const signature = c.req.query('sig');
  if (signature) {
    const secret = deriveSecret(services.serverSecret, 'click-signing', key.id);
    if (!clickSignatureValid(secret, signature, raw!, campaignId, creativeId)) {
      throw new PreciseError('validation_failed', 'sig does not match url, cmp and crv for this key', { field: 'sig' });
    }
  } else if (!(await allowListed(c, destination.hostname, campaignId))) {
    throw new PreciseError(
      'validation_failed',
      `destination host ${destination.hostname} is neither signed (sig) nor on the campaign's click_allow_list`,
      { field: 'url' },
    );
  }

  const params = new URL(c.req.url).searchParams;
  for (const name of ['key', 'url', 'sig']) params.delete(name);
  const clickId = uuidv7();
  const fromParams = pixelInput(params);
  const input = {
    ...fromParams,
    type: 'click',
    click_id: clickId,
    properties: { ...(fromParams.properties as object | undefined), destination: destination.toString() },
  };
  const normalised = normaliseInputs([input], {
    orgId: key.org_id,
    source: 'click',
    context: requestContext(c, 'click'),
    receivedAt: new Date(),
    payloadFormat: 'json',
    rawOf: () => JSON.stringify(input),
  });
  await services.sink.send({ events: normalised.events, failures: normalised.failures });
  const rejected = normalised.rejected[0];
  if (rejected) {
    throw new PreciseError('validation_failed', rejected.message, { field: rejected.field, reason: rejected.code });
  }

  c.header('cache-control', 'no-store');
  c.header('referrer-policy', 'no-referrer-when-downgrade');
  return c.redirect(withClickId(destination, clickId), 302);
});

async function allowListed(c: { get(name: 'services'): AppEnv['Variables']['services']; get(name: 'key'): AppEnv['Variables']['key'] }, host: string, campaignId: string | null) {
  if (!campaignId || !isUuid(campaignId)) return false;
  const properties = await c.get('services').campaigns.properties(c.get('key').org_id, campaignId.toLowerCase());
  return hostAllowed(host, properties?.click_allow_list);
}
