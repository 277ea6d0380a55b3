import type { Queryable } from './db/port.ts';
import { callRpc, type SupabaseClient } from './db/supabase.ts';
import { digestsEqual, hashKey, kindOfKey, type KeyKind, type KeyScope } from './keys.ts';
import { TtlCache, type LookupAdmission, type TtlCacheEntries, type TtlCacheOptions } from './ttl-cache.ts';

/**
 * Resolving an API key to its organization. The key is hashed (SHA-256) and looked up by hash;
 * the stored hash is then compared in constant time. Results are cached per isolate/process for
 * a short while (a pixel must not cost a database read), negative results for less and in a map
 * of their own (a flood of made-up keys cannot evict real ones); a revoked key therefore stops
 * working within `ttlMs`. A caller may pass an admission check that runs before the database is
 * asked about a key never seen (a per-address rate limit on unknown keys).
 */
export interface ResolvedKey {
  id: string;
  org_id: string;
  kind: KeyKind;
  scopes: KeyScope[];
  /** the key's settings, e.g. a postback token's param_map */
  properties: Record<string, unknown>;
}

export interface KeyStore {
  /** The live (not revoked, not expired) key with this hash, with its stored hash. */
  findByHash(hash: string): Promise<(ResolvedKey & { key_hash: string }) | null>;
  /** The newest live keys, at most `limit` (to warm a process's cache). */
  live?(limit: number): Promise<Array<ResolvedKey & { key_hash: string }>>;
}

export function sqlKeyStore(db: Queryable): KeyStore {
  return {
    async findByHash(hash) {
      // scopes as JSON: every driver parses it, without loading array type metadata first
      const { rows } = await db.query<ResolvedKey & { key_hash: string }>(
        'select id, org_id, kind, to_jsonb(scopes) as scopes, key_hash, properties from public.resolve_api_key($1)',
        [hash],
      );
      return rows[0] ?? null;
    },
    async live(limit) {
      const { rows } = await db.query<ResolvedKey & { key_hash: string }>(
        'select id, org_id, kind, to_jsonb(scopes) as scopes, key_hash, properties from public.live_api_keys($1)',
        [limit],
      );
      return rows;
    },
  };
}

/** The same lookup through supabase-js rpc (a Supabase edge deployment); no warm-up there. */
export function supabaseKeyStore(client: SupabaseClient): KeyStore {
  return {
    async findByHash(hash) {
      const rows = await callRpc<Array<ResolvedKey & { key_hash: string }>>(client, 'resolve_api_key', { p_key_hash: hash });
      return rows[0] ?? null;
    },
  };
}

export type KeyCacheEntries = TtlCacheEntries<ResolvedKey>;
export type KeyCacheOptions = TtlCacheOptions<ResolvedKey>;

/** What a request needs of the key cache (a per-request view may add limits around it). */
export interface KeyResolver {
  resolve(key: string, admit?: LookupAdmission): Promise<ResolvedKey | null>;
  /** Loads the live keys into the cache (see KeyCache.warm). */
  warm?(): Promise<number>;
}

export class KeyCache implements KeyResolver {
  private readonly cache: TtlCache<ResolvedKey>;
  private readonly store: KeyStore;

  constructor(store: KeyStore, options: KeyCacheOptions = {}) {
    this.store = store;
    this.cache = new TtlCache(async (hash) => {
      const row = await store.findByHash(hash);
      return row && digestsEqual(row.key_hash, hash)
        ? { id: row.id, org_id: row.org_id, kind: row.kind, scopes: row.scopes, properties: row.properties ?? {} }
        : null;
    }, options);
  }

  /**
   * Loads the live keys (the newest, up to the cache's size): a known key is re-checked after
   * its TTL without waiting for the unknown-key budget, so after a warm-up real keys never wait
   * behind a flood of made-up ones. Returns how many keys it loaded.
   */
  async warm(): Promise<number> {
    if (!this.store.live) return 0;
    const rows = await this.store.live(this.cache.entries.hits.max);
    for (const row of rows) {
      this.cache.prime(row.key_hash, { id: row.id, org_id: row.org_id, kind: row.kind, scopes: row.scopes, properties: row.properties ?? {} });
    }
    return rows.length;
  }

  /** The key's record, or null when it is not a live key of this deployment. */
  async resolve(key: string, admit?: LookupAdmission): Promise<ResolvedKey | null> {
    if (!kindOfKey(key)) return null;
    return this.cache.get(hashKey(key), admit);
  }
}
