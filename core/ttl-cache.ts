import { LRUCache } from 'lru-cache';

/**
 * A read-through cache with a time to live and coalesced loads (a burst of requests for one key
 * costs one load). Storage, expiry and the size bound are lru-cache's; this wrapper adds what it
 * does not have:
 * - misses live in an LRU of their own, with a shorter TTL: a flood of keys that do not exist
 *   fills only that one and cannot evict what is known;
 * - a known entry past its TTL stays as a "was known" mark until evicted (lru-cache's
 *   `noDeleteOnStaleGet`), so that reloading it is not an unknown lookup (see `admit`);
 * - loads are coalesced per instance, not in the shared store. lru-cache's `fetch` would keep an
 *   in-flight load in the store itself, and a Worker shares the store across requests: a load
 *   started by a request that is then cancelled never settles on workerd, and every later
 *   request for that key would wait on it. So a Worker builds its caches per request (I/O cannot
 *   cross requests) over one isolate-wide `TtlCacheEntries`, and coalesces within the request.
 */
export interface TtlCacheEntriesOptions {
  /** known entries kept */
  maxEntries?: number;
  /** misses kept (their own LRU) */
  maxNegativeEntries?: number;
  now?: () => number;
}

/** The stored side, shareable between caches: known values and misses, each bounded. */
export class TtlCacheEntries<V extends {}> {
  readonly hits: LRUCache<string, V>;
  readonly misses: LRUCache<string, true>;

  constructor(options: TtlCacheEntriesOptions = {}) {
    const now = options.now ?? Date.now;
    // TTLs are given per entry (each cache over these entries has its own). ttlResolution 0:
    // read the clock at each check instead of caching it behind a timer. The +1: lru-cache takes
    // a start time of 0 for "no TTL", and a test's clock may start at 0.
    const common = { perf: { now: () => now() + 1 }, ttlResolution: 0 };
    this.hits = new LRUCache({ max: options.maxEntries ?? 10_000, noDeleteOnStaleGet: true, ...common });
    this.misses = new LRUCache({ max: options.maxNegativeEntries ?? 10_000, ...common });
  }
}

export interface TtlCacheOptions<V extends {}> extends TtlCacheEntriesOptions {
  /** shared entries; when given, the bounds and clock above are theirs */
  entries?: TtlCacheEntries<V>;
  /** 0: nothing is kept */
  ttlMs?: number;
  negativeTtlMs?: number;
}

/**
 * Called before loading a key the cache has never seen (nor recently missed); throws to refuse
 * the load (a rate limit). Reloads of expired known entries and joins of a pending load skip it.
 */
export type LookupAdmission = () => void | Promise<void>;

export class TtlCache<V extends {}> {
  readonly entries: TtlCacheEntries<V>;
  private readonly pending = new Map<string, Promise<V | null>>();
  private readonly admitting = new Map<string, Promise<void>>();
  private readonly load: (key: string) => Promise<V | null>;
  private readonly ttlMs: number;
  private readonly negativeTtlMs: number;

  constructor(load: (key: string) => Promise<V | null>, options: TtlCacheOptions<V> = {}) {
    this.load = load;
    this.entries = options.entries ?? new TtlCacheEntries(options);
    this.ttlMs = options.ttlMs ?? 60_000;
    this.negativeTtlMs = options.negativeTtlMs ?? 10_000;
  }

  get(key: string, admit?: LookupAdmission): Promise<V | null> {
    const { hits, misses } = this.entries;
    const fresh = hits.get(key);
    if (fresh !== undefined) return Promise.resolve(fresh);
    const known = hits.peek(key, { allowStale: true }) !== undefined;
    if (!known && misses.get(key)) return Promise.resolve(null);
    const loading = this.pending.get(key);
    if (loading) return loading;
    // A burst of one new key waits for the first caller's admission: admitted, they join its
    // load; refused, each asks for its own (the refusal was the first caller's limit).
    const admitting = this.admitting.get(key);
    if (admitting) return admitting.then(() => this.get(key, admit), () => this.get(key, admit));
    if (known || !admit) return this.startLoad(key);
    const admission = Promise.resolve().then(admit);
    this.admitting.set(key, admission);
    return admission.then(
      () => (this.admitting.delete(key), this.startLoad(key)),
      (error: unknown) => {
        this.admitting.delete(key);
        throw error;
      },
    );
  }

  /** Remembers a value loaded in bulk (a warm-up), as if it had just been loaded. */
  prime(key: string, value: V): void {
    this.remember(key, value);
  }

  private startLoad(key: string): Promise<V | null> {
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
    const { hits, misses } = this.entries;
    hits.delete(key);
    misses.delete(key);
    // lru-cache reads a TTL of 0 as "forever"; here it means "keep nothing"
    if (value === null) {
      if (this.negativeTtlMs > 0) misses.set(key, true, { ttl: this.negativeTtlMs });
    } else if (this.ttlMs > 0) {
      hits.set(key, value, { ttl: this.ttlMs });
    }
  }
}
