import { Hono } from 'hono';
import { requestId } from 'hono/request-id';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import { PreciseError } from '../core/errors.ts';
import type { AppEnv, Bindings, Services } from './env.ts';
import { toPreciseError } from './errors.ts';
import { corsPolicy, securityHeaders } from './middleware/browser.ts';
import { rateLimits } from './middleware/rate-limit.ts';
import { clickRoutes } from './routes/click.ts';
import { eventsRoutes } from './routes/events.ts';
import { healthRoutes } from './routes/health.ts';
import { pixelRoutes } from './routes/pixel.ts';
import { postbackRoutes } from './routes/postback.ts';
import { webhookRoutes } from './routes/webhook.ts';
import { metricsRoutes } from './routes/metrics.ts';
import { attributionRoutes } from './routes/attribution.ts';
import { fatigueRoutes } from './routes/fatigue.ts';
import { alertsRoutes } from './routes/alerts.ts';

export interface AppOptions {
  /** The services of a request: shared on Node, per request on Workers (I/O cannot cross requests). */
  services: (env: Bindings) => Services;
}

/** The one Hono app: the Worker entry and the Node server both serve it. */
export function createApp(options: AppOptions) {
  const app = new Hono<AppEnv>();

  app.use(requestId({ headerName: 'x-request-id' }));
  app.use(securityHeaders());
  app.use(async (c, next) => {
    const services = options.services(c.env ?? {});
    c.set('services', services);
    try {
      await next();
    } finally {
      if (services.release) {
        const released = services.release().catch((error) => console.error('release failed:', error));
        if (hasExecutionContext(c)) c.executionCtx.waitUntil(released);
        else await released;
      }
    }
  });
  app.use(corsPolicy());
  app.use(rateLimits());

  app.route('/healthz', healthRoutes);
  app.route('/v1/px', pixelRoutes);
  app.route('/v1/events', eventsRoutes);
  app.route('/v1/click', clickRoutes);
  app.route('/v1/postback', postbackRoutes);
  app.route('/v1/webhooks', webhookRoutes);
  app.route('/v1/metrics', metricsRoutes);
  app.route('/v1/attribution', attributionRoutes);
  app.route('/v1/fatigue', fatigueRoutes);
  app.route('/v1/alerts', alertsRoutes);

  app.notFound((c) =>
    c.json(new PreciseError('not_found', `no route for ${c.req.method} ${c.req.path}`).toBody(c.get('requestId')), 404),
  );
  app.onError((error, c) => {
    const preciseError = toPreciseError(error);
    if (preciseError.status >= 500 && preciseError.code !== 'unavailable') console.error(`[${c.get('requestId')}]`, error);
    const retryAfter = preciseError.details.retry_after_seconds;
    if (typeof retryAfter === 'number') c.header('retry-after', String(retryAfter));
    return c.json(preciseError.toBody(c.get('requestId')), preciseError.status as ContentfulStatusCode);
  });

  return app;
}

/** Hono throws when asked for the execution context outside Workers. */
function hasExecutionContext(c: { executionCtx: unknown }): boolean {
  try {
    return Boolean(c.executionCtx);
  } catch {
    return false;
  }
}

export type App = ReturnType<typeof createApp>;
