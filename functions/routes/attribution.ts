import { Hono } from 'hono';
import { explainConversion, parseDimension, parseInterval, parseModels, queryAttribution } from '../../core/attribution-query.ts';
import { isUuid } from '../../core/events/canonical.ts';
import { PreciseError } from '../../core/errors.ts';
import { validateTimeZone } from '../../core/metrics-query.ts';
import { timeParam } from '../../core/time-range.ts';
import type { AppEnv } from '../env.ts';
import { requireKey } from '../middleware/auth.ts';

/**
 * GET /v1/attribution (secret key with `read`): `model` (one or several of last_touch,
 * first_touch, linear, position_based, time_decay, markov, shapley; comma-separated or repeated),
 * `dimension` (campaign, creative, data_asset or property:<name>; default campaign), `from`, `to`
 * and `tz` as GET /v1/metrics takes them (the conversions whose 15-minute bucket starts in the
 * range), optional `campaign_id` (the campaign's conversions and the paths that touch it) and
 * `interval` (a level such as 0.9: bootstrap low/high for markov and shapley).
 * GET /v1/attribution/conversions/:event_id: one conversion, its path and each rule model's
 * credit per touch. Both read the ledger the attribution job keeps, never raw events.
 */
export const attributionRoutes = new Hono<AppEnv>();

const readKey = requireKey({ kinds: ['secret'], scope: 'read', from: 'bearer' });

attributionRoutes.get('/', readKey, async (c) => {
  const key = c.get('key');
  const models = parseModels(c.req.queries('model') ?? []);
  const { dimension, property } = parseDimension(c.req.query('dimension') || 'campaign');
  const timeZone = c.req.query('tz') || 'UTC';
  validateTimeZone(timeZone);
  const from = timeParam(c.req.query('from'), 'from', timeZone);
  const to = timeParam(c.req.query('to'), 'to', timeZone);
  if (Date.parse(to) <= Date.parse(from)) throw new PreciseError('validation_failed', 'to must be after from', { field: 'to' });
  const givenCampaign = c.req.query('campaign_id');
  if (givenCampaign !== undefined && !isUuid(givenCampaign)) {
    throw new PreciseError('validation_failed', 'campaign_id must be a UUID', { field: 'campaign_id' });
  }
  const interval = parseInterval(c.req.query('interval'));

  const { data, meta } = await queryAttribution(c.get('services').attribution, c.get('services').attributionMath, {
    orgId: key.org_id,
    models,
    dimension,
    property,
    from,
    to,
    campaignId: givenCampaign?.toLowerCase(),
    interval,
  });
  return c.json({ data, meta: { ...meta, tz: timeZone, ...(interval !== undefined ? { interval } : {}) } });
});

// event ids as ingestion takes them: 1 to 128 printable ASCII characters
const EVENT_ID = /^[\x21-\x7e]{1,128}$/;

attributionRoutes.get('/conversions/:event_id', readKey, async (c) => {
  const eventId = c.req.param('event_id');
  if (!EVENT_ID.test(eventId)) {
    throw new PreciseError('validation_failed', 'event_id is 1 to 128 printable ASCII characters', { field: 'event_id' });
  }
  const services = c.get('services');
  return c.json(await explainConversion(services.attribution, services.attributionMath, c.get('key').org_id, eventId));
});
