import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApiKey, createOrganization } from '../../core/admin.ts';
import { KeyCache, sqlKeyStore, type KeyStore } from '../../core/auth.ts';
import { generateKey } from '../../core/keys.ts';
import { BACKEND, createTestDatabase, type TestDatabase } from '../helpers/database.ts';

describe(`key cache (${BACKEND})`, () => {
  let test: TestDatabase;
  let key: string;
  let lookups: number;
  let store: KeyStore;

  beforeAll(async () => {
    test = await createTestDatabase();
    const org = await createOrganization(test.db, { name: 'Keys Co' });
    key = (await createApiKey(test.db, { orgId: org.id, kind: 'publishable' })).key;
    const real = sqlKeyStore(test.db);
    // the real store, counted
    store = { findByHash: (hash) => ((lookups += 1), real.findByHash(hash)) };
  });
  afterAll(() => test?.drop());

  it('asks the database once for a burst of requests with the same key', async () => {
    lookups = 0;
    const cache = new KeyCache(store);
    const results = await Promise.all(Array.from({ length: 50 }, () => cache.resolve(key)));
    expect(results.every((result) => result?.kind === 'publishable')).toBe(true);
    expect(lookups).toBe(1);
  });

  it('forgets a key after its TTL, and an unknown key after the shorter negative TTL', async () => {
    lookups = 0;
    let now = 0;
    const cache = new KeyCache(store, { ttlMs: 1000, negativeTtlMs: 100, now: () => now });
    const unknown = generateKey('publishable');
    await cache.resolve(key);
    await cache.resolve(unknown);
    now = 99;
    await cache.resolve(key);
    await cache.resolve(unknown);
    expect(lookups).toBe(2);
    now = 150;
    expect(await cache.resolve(unknown)).toBeNull();
    expect(lookups).toBe(3);
    now = 1001;
    expect(await cache.resolve(key)).not.toBeNull();
    expect(lookups).toBe(4);
  });

  it('never asks the database about strings that are not keys, and stays bounded', async () => {
    lookups = 0;
    const cache = new KeyCache(store, { maxEntries: 3 });
    expect(await cache.resolve('pk_short')).toBeNull();
    expect(await cache.resolve("pk_' or 1=1 --")).toBeNull();
    expect(lookups).toBe(0);
    for (let i = 0; i < 5; i += 1) await cache.resolve(generateKey('publishable'));
    await cache.resolve(key);
    await cache.resolve(key);
    expect(lookups).toBe(6);
  });

  it('knows the live keys after a warm-up: they never wait for the unknown-key budget, revoked ones are not loaded', async () => {
    const org = await createOrganization(test.db, { name: 'Warm Co' });
    const live = (await createApiKey(test.db, { orgId: org.id, kind: 'secret', scopes: ['ingest'] })).key;
    const revoked = (await createApiKey(test.db, { orgId: org.id, kind: 'publishable' })).key;
    await test.db.query(`update api_keys set revoked_at = now() where org_id = $1 and kind = 'publishable'`, [org.id]);
    const cache = new KeyCache(sqlKeyStore(test.db));
    expect(await cache.warm()).toBeGreaterThanOrEqual(2); // this org's live key and the first org's
    // an admission that refuses every lookup: a flood has spent the budget
    const refuse = () => {
      throw new Error('budget spent');
    };
    expect(await cache.resolve(live, refuse)).toMatchObject({ org_id: org.id, kind: 'secret' });
    expect(await cache.resolve(key, refuse)).toMatchObject({ kind: 'publishable' });
    await expect(cache.resolve(revoked, refuse)).rejects.toThrow('budget spent');
  });
});
