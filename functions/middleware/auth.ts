import type { Context } from 'hono';
import { createMiddleware } from 'hono/factory';
import type { KeyKind, KeyScope } from '../../core/keys.ts';
import { PreciseError } from '../../core/errors.ts';
import type { AppEnv } from '../env.ts';

/**
 * Key authentication. Pixels and beacons carry a publishable key in the `key` parameter (pages
 * cannot set headers); server calls carry a secret key as `Authorization: Bearer sk_…`.
 * A secret key in a URL is refused: URLs end up in logs and referrers.
 */
export function keyFromRequest(c: { req: { query(name: string): string | undefined; header(name: string): string | undefined } }) {
  const bearer = /^Bearer\s+(\S+)$/i.exec(c.req.header('authorization') ?? '')?.[1];
  return { bearer, query: c.req.query('key') };
}

export function requireKey(options: { kinds: KeyKind[]; scope?: KeyScope; from: 'query' | 'bearer' }) {
  return createMiddleware<AppEnv>(async (c, next) => {
    c.set('key', await authenticate(c, options));
    await next();
  });
}

export async function authenticate(
  c: Context<AppEnv>,
  options: { kinds: KeyKind[]; scope?: KeyScope; from: 'query' | 'bearer' },
) {
  const { bearer, query } = keyFromRequest(c);
  if (query?.startsWith('sk_')) {
    throw new PreciseError('unauthorized', 'a secret key must never be put in a URL; use a publishable key (pk_)', {
      field: 'key',
    });
  }
  const presented = options.from === 'query' ? query : bearer;
  if (!presented) {
    throw new PreciseError(
      'unauthorized',
      options.from === 'query' ? 'missing key parameter (a pk_ publishable key)' : 'missing Authorization: Bearer sk_… header',
      { field: options.from === 'query' ? 'key' : 'authorization' },
    );
  }
  const key = await c.get('services').keys.resolve(presented);
  if (!key) throw new PreciseError('unauthorized', 'unknown, revoked or expired key', { field: options.from === 'query' ? 'key' : 'authorization' });
  if (!options.kinds.includes(key.kind)) {
    throw new PreciseError('forbidden', `a ${key.kind} key cannot be used here (needs ${options.kinds.join(' or ')})`, {
      field: 'key',
    });
  }
  if (options.scope && !key.scopes.includes(options.scope)) {
    throw new PreciseError('forbidden', `this key lacks the ${options.scope} scope`, { field: 'authorization' });
  }
  return key;
}
