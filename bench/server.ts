/**
 * One HTTP server of the ingestion benchmark, in its own process (the load comes from another).
 *   node --experimental-strip-types bench/server.ts <mode> <databaseUrl> <port>
 * modes:
 *   ceiling  the Precise app with a sink that writes nothing (the HTTP + parsing ceiling)
 *   precise  the Precise app as `npm start` runs it (group commit, durable before 2xx)
 *   naive    what a typical app does: validate, one INSERT per request through a pool of 10,
 *            answer after its COMMIT
 */
import { Hono } from 'hono';
import { serve } from '@hono/node-server';
import { KeyCache, sqlKeyStore } from '../core/auth.ts';
import { openPostgres } from '../core/db/postgres.ts';
import { normaliseEvent } from '../core/events/canonical.ts';
import { enrichRequest } from '../core/events/enrich.ts';
import { pixelInput } from '../core/events/pixel-params.ts';
import { parseNodeConfig } from '../core/config.ts';
import type { EventSink } from '../core/ingest/batch.ts';
import { createApp } from '../functions/app.ts';
import { nodeServices } from '../functions/node.ts';
import * as attributionModels from '../scheduled/attribution/models.ts';
import * as fatigueDetector from '../scheduled/fatigue/detector.ts';

const [mode, databaseUrl, port] = process.argv.slice(2) as [string, string, string];
const config = parseNodeConfig({ ...process.env, IP_HASH_SECRET: 'bench-secret-0123456789abcdef' });
const GIF = Buffer.from('R0lGODlhAQABAIAAAP///wAAACH5BAEAAAAALAAAAAABAAEAAAICRAEAOw==', 'base64');

function preciseApp(sinkOverride?: EventSink) {
  const db = openPostgres({ connectionString: databaseUrl, max: 10, applicationName: `bench-${mode}` });
  const services = nodeServices(db, config, 'bench-server-secret-0123456789-0123456789', attributionModels, fatigueDetector);
  if (sinkOverride) services.sink = sinkOverride;
  return createApp({ services: () => services });
}

function naiveApp() {
  const db = openPostgres({ connectionString: databaseUrl, max: 10, applicationName: 'bench-naive' });
  const keys = new KeyCache(sqlKeyStore(db));
  const app = new Hono();
  app.get('/v1/px', async (c) => {
    const key = await keys.resolve(c.req.query('key') ?? '');
    if (!key) return c.body(GIF, 401);
    const params = new URL(c.req.url).searchParams;
    const context = enrichRequest(
      { source: 'pixel', userAgent: c.req.header('user-agent'), headers: { get: (n) => c.req.header(n) ?? null }, now: new Date() },
      config.IP_HASH_SECRET!,
    );
    const result = normaliseEvent(pixelInput(params), { orgId: key.org_id, receivedAt: new Date(), context });
    if (!result.ok) return c.body(GIF, 400);
    const e = result.event;
    await db.query(
      `insert into events (org_id, event_id, type, occurred_at, received_at, campaign_id, creative_id, asset_ids,
         user_key, click_id, value, currency, status, properties, context)
       values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) on conflict do nothing`,
      [e.org_id, e.event_id, e.type, e.occurred_at, e.received_at, e.campaign_id, e.creative_id, e.asset_ids,
        e.user_key, e.click_id, e.value, e.currency, e.status, e.properties, e.context],
    );
    c.header('cache-control', 'no-store');
    return c.body(GIF, 200, { 'content-type': 'image/gif' });
  });
  return app;
}

const app =
  mode === 'ceiling'
    ? preciseApp({ send: async (batch) => ({ outcomes: batch.events.map(() => 'stored' as const) }) })
    : mode === 'precise'
      ? preciseApp()
      : naiveApp();

serve({ fetch: app.fetch, port: Number(port), hostname: '127.0.0.1' }, () => process.send?.('ready'));
process.on('SIGTERM', () => process.exit(0));
