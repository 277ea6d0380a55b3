import { Hono } from 'hono';
import { HTTPException } from 'hono/http-exception';
import { requestId } from 'hono/request-id';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import type { Database } from '../core/db/port.ts';
import { PreciseError } from '../core/errors.ts';
import type { AppEnv, Bindings } from './env.ts';
import { healthRoutes } from './routes/health.ts';

export interface AppOptions {
  /** The database of a request: a shared pool on Node, a Hyperdrive connection on Workers. */
  database: (env: Bindings) => Database;
}

/** The one Hono app: the Worker entry and the Node server both serve it. */
export function createApp(options: AppOptions) {
  const app = new Hono<AppEnv>();

  app.use(requestId({ headerName: 'x-request-id' }));
  app.use(async (c, next) => {
    c.set('db', options.database(c.env ?? {}));
    await next();
  });

  app.route('/healthz', healthRoutes);

  app.notFound((c) =>
    c.json(new PreciseError('not_found', `no route for ${c.req.method} ${c.req.path}`).toBody(c.get('requestId')), 404),
  );
  app.onError((error, c) => {
    const preciseError = toPreciseError(error);
    if (preciseError.status >= 500) console.error(`[${c.get('requestId')}]`, error);
    return c.json(preciseError.toBody(c.get('requestId')), preciseError.status as ContentfulStatusCode);
  });

  return app;
}

function toPreciseError(error: unknown): PreciseError {
  if (error instanceof PreciseError) return error;
  if (error instanceof HTTPException) {
    const code = error.status === 413 ? 'payload_too_large' : error.status === 401 ? 'unauthorized' : 'bad_request';
    return new PreciseError(code, error.message || 'bad request');
  }
  return new PreciseError('internal', 'internal error');
}

export type App = ReturnType<typeof createApp>;
