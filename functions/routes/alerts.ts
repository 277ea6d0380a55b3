import { Hono } from 'hono';
import { alertDeliveryLog } from '../../core/alerts/log.ts';
import type { AppEnv } from '../env.ts';
import { requireKey } from '../middleware/auth.ts';

/**
 * GET /v1/alerts/deliveries[?status=pending|delivered|failed][&limit=N] (secret key with `read`):
 * the organization's alert webhook (URL, events, secret version, whether a 410 disabled it) and
 * its newest deliveries with their attempts, newest first. Never the signing secret.
 */
export const alertsRoutes = new Hono<AppEnv>();

const readKey = requireKey({ kinds: ['secret'], scope: 'read', from: 'bearer' });

alertsRoutes.get('/deliveries', readKey, async (c) =>
  c.json(await alertDeliveryLog(c.get('services').alerts, c.get('key').org_id, { status: c.req.query('status'), limit: c.req.query('limit') })),
);
