/**
 * A small read-through cache with a time to live and coalesced loads (a burst of requests for
 * one key costs one load). Hits and misses live in two separate bounded maps (oldest out first):
 * a flood of keys that do not exist fills only the miss map and cannot evict what is known.
 * A known entry past its TTL stays as a "was known" mark until evicted, so that reloading it is
 * not an unknown lookup (see `admit`).
 * Entries can be shared between instances: a Worker builds its loaders per request (I/O cannot
 * cross requests) over one isolate-wide map; the miss map follows the hit map it belongs to.
 */
export type TtlCacheEntries<V> = Map<string, { value: V; expires: number }>;

export interface TtlCacheOptions<V> {
  entries?: TtlCacheEntries<V>;
  ttlMs?: number;
  negativeTtlMs?: number;
  /** known entries kept */
  maxEntries?: number;
  /** misses kept (their own map) */
  maxNegativeEntries?: number;
  now?: () => number;
}

/**
 * Called before loading a key the cache has never seen (nor recently missed); throws to refuse
 * the load (a rate limit). Reloads of expired known entries and joins of a pending load skip it.
 */
export type LookupAdmission = () => void | Promise<void>;

// The miss map of a shared hit map, so that instances sharing one share the other.
const missMaps = new WeakMap<TtlCacheEntries<unknown>, Map<string, number>>();

function missMapOf<V>(entries: TtlCacheEntries<V>): Map<string, number> {
  let misses = missMaps.get(entries as TtlCacheEntries<unknown>);
  if (!misses) missMaps.set(entries as TtlCacheEntries<unknown>, (misses = new Map()));
  return misses;
}

export class TtlCache<V> {
  private readonly entries: TtlCacheEntries<V>;
  private readonly misses: Map<string, number>;
  private readonly pending = new Map<string, Promise<V | null>>();
  private readonly admitting = new Map<string, Promise<void>>();
  private readonly load: (key: string) => Promise<V | null>;
  private readonly ttlMs: number;
  private readonly negativeTtlMs: number;
  private readonly maxEntries: number;
  private readonly maxNegativeEntries: number;
  private readonly now: () => number;

  constructor(load: (key: string) => Promise<V | null>, options: TtlCacheOptions<V> = {}) {
    this.load = load;
    this.entries = options.entries ?? new Map();
    this.misses = missMapOf(this.entries);
    this.ttlMs = options.ttlMs ?? 60_000;
    this.negativeTtlMs = options.negativeTtlMs ?? 10_000;
    this.maxEntries = options.maxEntries ?? 10_000;
    this.maxNegativeEntries = options.maxNegativeEntries ?? 10_000;
    this.now = options.now ?? Date.now;
  }

  get(key: string, admit?: LookupAdmission): Promise<V | null> {
    const now = this.now();
    const known = this.entries.get(key);
    if (known && known.expires > now) return Promise.resolve(known.value);
    const missedUntil = this.misses.get(key);
    if (!known && missedUntil !== undefined && missedUntil > now) return Promise.resolve(null);
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
    const now = this.now();
    this.entries.delete(key);
    this.misses.delete(key);
    if (value === null) setBounded(this.misses, key, now + this.negativeTtlMs, this.maxNegativeEntries);
    else setBounded(this.entries, key, { value, expires: now + this.ttlMs }, this.maxEntries);
  }
}

/** Maps iterate in insertion order: at the bound, the oldest entry goes. */
function setBounded<T>(map: Map<string, T>, key: string, value: T, max: number) {
  if (map.size >= max) map.delete(map.keys().next().value!);
  map.set(key, value);
}
