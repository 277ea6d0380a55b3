import type { Queryable } from './db/port.ts';
import { digestsEqual, hashKey, kindOfKey, type KeyKind, type KeyScope } from './keys.ts';

/**
 * Resolving an API key to its organization. The key is hashed (SHA-256) and looked up by hash;
 * the stored hash is then compared in constant time. Results are cached per isolate/process for
 * a short while (a pixel must not cost a database read), negative results for less; a revoked
 * key therefore stops working within `ttlMs`.
 */
export interface ResolvedKey {
  id: string;
  org_id: string;
  kind: KeyKind;
  scopes: KeyScope[];
}

export interface KeyStore {
  /** The live (not revoked, not expired) key with this hash, with its stored hash. */
  findByHash(hash: string): Promise<(ResolvedKey & { key_hash: string }) | null>;
}

export function sqlKeyStore(db: Queryable): KeyStore {
  return {
    async findByHash(hash) {
      // scopes as JSON: every driver parses it, without loading array type metadata first
      const { rows } = await db.query<ResolvedKey & { key_hash: string }>(
        'select id, org_id, kind, to_jsonb(scopes) as scopes, key_hash from public.resolve_api_key($1)',
        [hash],
      );
      return rows[0] ?? null;
    },
  };
}

export type KeyCacheEntries = Map<string, { value: ResolvedKey | null; expires: number }>;

export interface KeyCacheOptions {
  /** Share entries between caches (the Worker makes a cache per request over one isolate-wide map). */
  entries?: KeyCacheEntries;
  ttlMs?: number;
  negativeTtlMs?: number;
  maxEntries?: number;
  now?: () => number;
}

export class KeyCache {
  private readonly entries: KeyCacheEntries;
  private readonly store: KeyStore;
  private readonly ttlMs: number;
  private readonly negativeTtlMs: number;
  private readonly maxEntries: number;
  private readonly now: () => number;
  /** Lookups under way, so that a burst of requests with a new key costs one query, not hundreds. */
  private readonly pending = new Map<string, Promise<ResolvedKey | null>>();

  constructor(store: KeyStore, options: KeyCacheOptions = {}) {
    this.store = store;
    this.entries = options.entries ?? new Map();
    this.ttlMs = options.ttlMs ?? 60_000;
    this.negativeTtlMs = options.negativeTtlMs ?? 10_000;
    this.maxEntries = options.maxEntries ?? 10_000;
    this.now = options.now ?? Date.now;
  }

  /** The key's record, or null when it is not a live key of this deployment. */
  async resolve(key: string): Promise<ResolvedKey | null> {
    if (!kindOfKey(key)) return null;
    const hash = hashKey(key);
    const cached = this.entries.get(hash);
    if (cached && cached.expires > this.now()) return cached.value;

    let lookup = this.pending.get(hash);
    if (!lookup) {
      lookup = this.lookup(hash).finally(() => this.pending.delete(hash));
      this.pending.set(hash, lookup);
    }
    return lookup;
  }

  private async lookup(hash: string): Promise<ResolvedKey | null> {
    const row = await this.store.findByHash(hash);
    const value =
      row && digestsEqual(row.key_hash, hash)
        ? { id: row.id, org_id: row.org_id, kind: row.kind, scopes: row.scopes }
        : null;
    this.remember(hash, value);
    return value;
  }

  private remember(hash: string, value: ResolvedKey | null) {
    this.entries.delete(hash);
    if (this.entries.size >= this.maxEntries) {
      // Maps iterate in insertion order: drop the oldest entry.
      this.entries.delete(this.entries.keys().next().value!);
    }
    this.entries.set(hash, { value, expires: this.now() + (value ? this.ttlMs : this.negativeTtlMs) });
  }
}
