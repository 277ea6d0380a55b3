import { Hono } from 'hono';
import { isUuid } from '../../core/events/canonical.ts';
import { PreciseError } from '../../core/errors.ts';
import { dayParam, fatigueSeries, fatigueVerdicts } from '../../core/fatigue-query.ts';
import type { AppEnv } from '../env.ts';
import { requireKey } from '../middleware/auth.ts';

/**
 * GET /v1/fatigue?campaign_id=…[&as_of=YYYY-MM-DD] (secret key with `read`): one row per creative
 * of the campaign, `{ creative_id, status, score, since, evidence }`, its verdict on `as_of`
 * (default: the last day scored), the evidence with the creative's frequency.
 * GET /v1/fatigue/:creative_id?campaign_id=…[&tz=IANA name]: the creative's daily series in local
 * days of `tz` (default UTC) and its exposure curve. Both read what the creative-fatigue job stored.
 */
export const fatigueRoutes = new Hono<AppEnv>();

const readKey = requireKey({ kinds: ['secret'], scope: 'read', from: 'bearer' });

function campaignParam(value: string | undefined): string {
  if (!value) throw new PreciseError('validation_failed', 'campaign_id is required', { field: 'campaign_id' });
  if (!isUuid(value)) throw new PreciseError('validation_failed', 'campaign_id must be a UUID', { field: 'campaign_id' });
  return value.toLowerCase();
}

fatigueRoutes.get('/', readKey, async (c) => {
  const campaignId = campaignParam(c.req.query('campaign_id'));
  const asOf = dayParam(c.req.query('as_of'), 'as_of');
  return c.json(await fatigueVerdicts(c.get('services').fatigue, c.get('key').org_id, campaignId, asOf));
});

// creative ids as events carry them: 1 to 128 characters, none a NUL or half a surrogate pair
// (Postgres text holds neither: the query would fail with a 5xx instead of a 400)
const BAD_TEXT = /\u0000|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

fatigueRoutes.get('/:creative_id', readKey, async (c) => {
  const creativeId = c.req.param('creative_id');
  if (creativeId.length < 1 || creativeId.length > 128 || BAD_TEXT.test(creativeId)) {
    throw new PreciseError('validation_failed', 'creative_id is 1 to 128 characters, no NUL', { field: 'creative_id' });
  }
  const campaignId = campaignParam(c.req.query('campaign_id'));
  const services = c.get('services');
  const query = { orgId: c.get('key').org_id, campaignId, creativeId, timeZone: c.req.query('tz') ?? 'UTC' };
  return c.json(await fatigueSeries(services.fatigue, services.fatigueMath, query));
});
