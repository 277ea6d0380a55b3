import type { MiddlewareHandler } from 'hono';
import { cors } from 'hono/cors';
import { createMiddleware } from 'hono/factory';
import { secureHeaders } from 'hono/secure-headers';

type SecureHeadersOptions = NonNullable<Parameters<typeof secureHeaders>[0]>;
import type { AppEnv } from '../env.ts';

/**
 * What browsers are told. The publishable endpoints (pixel, beacon, click) are called from any
 * page: CORS for every origin, reflected with credentials allowed, because navigator.sendBeacon
 * always sends credentials and a JSON beacon is preflighted (we use no cookies: credentials give
 * nothing). The secret-key API only for the origins in CORS_ORIGINS (default none).
 * Every response: nosniff, no referrer, a CSP that allows nothing (we serve no HTML).
 */
const PUBLISHABLE_PATH = /^\/v1\/(px|click)\/?$/;
const isPublishable = (path: string) => PUBLISHABLE_PATH.test(path);

/** Headers a cross-origin fetch() may read on our answers. */
const EXPOSED = ['x-request-id', 'retry-after', 'x-precise-error', 'x-precise-error-message'];

const publishableCors = cors({
  origin: (origin) => origin || null,
  credentials: true,
  allowMethods: ['GET', 'POST', 'OPTIONS'],
  allowHeaders: ['content-type', 'x-precise-anonymous'],
  exposeHeaders: EXPOSED,
  maxAge: 86_400,
});

const apiCors = cors({
  origin: (origin, c) => {
    const allowed: readonly string[] = c.get('services')?.corsOrigins ?? [];
    if (allowed.includes('*')) return '*';
    return origin && allowed.includes(origin) ? origin : null;
  },
  allowMethods: ['GET', 'POST', 'OPTIONS'],
  allowHeaders: ['authorization', 'content-type'],
  exposeHeaders: EXPOSED,
  maxAge: 600,
});

export function corsPolicy(): MiddlewareHandler<AppEnv> {
  return (c, next) => (isPublishable(c.req.path) ? publishableCors(c, next) : apiCors(c, next));
}

const strict: SecureHeadersOptions = {
  contentSecurityPolicy: { defaultSrc: ["'none'"], frameAncestors: ["'none'"] },
  referrerPolicy: 'no-referrer',
  xFrameOptions: 'DENY',
};
// An <img> pixel on another site must load: its resource policy is cross-origin.
const publishableHeaders = secureHeaders({ ...strict, crossOriginResourcePolicy: 'cross-origin' });
const apiHeaders = secureHeaders({ ...strict, crossOriginResourcePolicy: 'same-origin' });

export function securityHeaders() {
  return createMiddleware<AppEnv>((c, next) => (isPublishable(c.req.path) ? publishableHeaders(c, next) : apiHeaders(c, next)));
}
