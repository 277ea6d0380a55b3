/**
 * A small read-through cache with a time to live, a shorter one for misses (null), a size bound
 * (oldest out first) and coalesced loads (a burst of requests for one key costs one load).
 * Entries can be shared between instances: a Worker builds its loaders per request (I/O cannot
 * cross requests) over one isolate-wide map.
 */
export type TtlCacheEntries<V> = Map<string, { value: V | null; expires: number }>;

export interface TtlCacheOptions<V> {
  entries?: TtlCacheEntries<V>;
  ttlMs?: number;
  negativeTtlMs?: number;
  maxEntries?: number;
  now?: () => number;
}

export class TtlCache<V> {
  private readonly entries: TtlCacheEntries<V>;
  private readonly pending = new Map<string, Promise<V | null>>();
  private readonly load: (key: string) => Promise<V | null>;
  private readonly ttlMs: number;
  private readonly negativeTtlMs: number;
  private readonly maxEntries: number;
  private readonly now: () => number;

  constructor(load: (key: string) => Promise<V | null>, options: TtlCacheOptions<V> = {}) {
    this.load = load;
    this.entries = options.entries ?? new Map();
    this.ttlMs = options.ttlMs ?? 60_000;
    this.negativeTtlMs = options.negativeTtlMs ?? 10_000;
    this.maxEntries = options.maxEntries ?? 10_000;
    this.now = options.now ?? Date.now;
  }

  get(key: string): Promise<V | null> {
    const cached = this.entries.get(key);
    if (cached && cached.expires > this.now()) return Promise.resolve(cached.value);
    let loading = this.pending.get(key);
    if (!loading) {
      loading = this.load(key)
        .then((value) => (this.remember(key, value), value))
        .finally(() => this.pending.delete(key));
      this.pending.set(key, loading);
    }
    return loading;
  }

  private remember(key: string, value: V | null) {
    this.entries.delete(key);
    // Maps iterate in insertion order: drop the oldest entry.
    if (this.entries.size >= this.maxEntries) this.entries.delete(this.entries.keys().next().value!);
    this.entries.set(key, { value, expires: this.now() + (value === null ? this.negativeTtlMs : this.ttlMs) });
  }
}
