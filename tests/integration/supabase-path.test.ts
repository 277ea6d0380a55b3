import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApiKey, createOrganization } from '../../core/admin.ts';
import { supabaseServiceClient } from '../../core/db/supabase-client.ts';
import { runRollup } from '../../scheduled/jobs/rollup.ts';
import { createApp } from '../../functions/app.ts';
import { createServices, supabaseStores } from '../../functions/services.ts';
import * as attributionModels from '../../scheduled/attribution/models.ts';
import * as fatigueDetector from '../../scheduled/fatigue/detector.ts';
import { directSink } from '../../functions/sinks/direct.ts';
import { BACKEND, createTestDatabase, type TestDatabase } from '../helpers/database.ts';
import { startPostgrestStandIn, type PostgrestStandIn } from '../helpers/postgrest-standin.ts';

// The edge's Supabase write path: supabase-js rpc → (PostgREST stand-in) → the same SQL functions.
describe(`Supabase path through supabase-js rpc (${BACKEND}, PostgREST stand-in)`, () => {
  const serviceRoleKey = 'service-role-key-for-the-stand-in';
  let test: TestDatabase;
  let postgrest: PostgrestStandIn;
  let orgId: string;
  let ingestKey: string;
  let publishableKey: string;

  const appWith = (key: string) => {
    const stores = supabaseStores(supabaseServiceClient(postgrest.url, key));
    const services = createServices({
      stores,
      serverSecret: 'a-server-secret-of-thirty-two-characters-or-more',
      sink: directSink(stores.writer),
      ipHashSecret: 'a-secret-of-sixteen-chars-or-more',
      clientIp: () => '192.0.2.1',
      attributionMath: attributionModels,
      fatigueMath: fatigueDetector,
    });
    return createApp({ services: () => services });
  };

  beforeAll(async () => {
    test = await createTestDatabase();
    postgrest = await startPostgrestStandIn(test.db, serviceRoleKey);
    orgId = (await createOrganization(test.db, { name: 'Supabase Co' })).id;
    ingestKey = (await createApiKey(test.db, { orgId, kind: 'secret', scopes: ['ingest'] })).key;
    publishableKey = (await createApiKey(test.db, { orgId, kind: 'publishable' })).key;
  });
  afterAll(async () => {
    await postgrest?.close();
    await test?.drop();
  });

  it('authenticates, writes with dedup and reports health through rpc', async () => {
    const app = appWith(serviceRoleKey);
    expect((await app.request('/healthz')).status).toBe(200);
    const post = () =>
      app.request('/v1/events', {
        method: 'POST',
        headers: { authorization: `Bearer ${ingestKey}` },
        body: JSON.stringify({ events: [{ event_id: 'sb-1', type: 'impression' }, { event_id: 'sb-2', type: 'click', value: 2, currency: 'USD' }, { type: 'Bad' }] }),
      });
    const first = await post();
    expect(first.status).toBe(202);
    expect(await first.json()).toMatchObject({ accepted: 2, duplicates: 0, rejected: [{ index: 2, field: 'type' }] });
    expect(await (await post()).json()).toMatchObject({ accepted: 0, duplicates: 2 });
    expect((await app.request(`/v1/px?key=${publishableKey}&eid=sb-px`)).status).toBe(200);

    const { rows } = await test.db.query<{ event_id: string }>('select event_id from events where org_id = $1 order by 1', [orgId]);
    expect(rows.map((row) => row.event_id)).toEqual(['sb-1', 'sb-2', 'sb-px']);
    const failed = await test.db.query<{ n: number }>('select count(*)::int as n from failed_events where org_id = $1', [orgId]);
    expect(failed.rows[0]!.n).toBe(2);
    expect(new Set(postgrest.calls)).toEqual(new Set(['resolve_api_key', 'ingest_events']));
  });

  it('serves GET /v1/metrics through rpc, after the rollup', async () => {
    await runRollup(test.db);
    const readKey = (await createApiKey(test.db, { orgId, kind: 'secret', scopes: ['read'] })).key;
    const today = new Date().toISOString().slice(0, 10);
    const tomorrow = new Date(Date.now() + 86_400_000).toISOString().slice(0, 10);
    const response = await appWith(serviceRoleKey).request(
      `/v1/metrics?metric=impressions,clicks&from=${today}&to=${tomorrow}&granularity=day&tz=UTC`,
      { headers: { authorization: `Bearer ${readKey}` } },
    );
    expect(response.status).toBe(200);
    // sb-1 and the pixel are impressions; sb-2 a click
    expect(((await response.json()) as { data: unknown }).data).toEqual([
      { bucket: `${today}T00:00:00+00:00`, metric: 'impressions', value: 2 },
      { bucket: `${today}T00:00:00+00:00`, metric: 'clicks', value: 1 },
    ]);
    expect(postgrest.calls).toContain('metric_buckets');
  });

  it('is refused by the API with a wrong service key, and then answers 401/503, never 2xx', async () => {
    const app = appWith('not-the-service-role-key');
    const health = await app.request('/healthz');
    expect(health.status).toBe(503);
    const batch = await app.request('/v1/events', {
      method: 'POST',
      headers: { authorization: `Bearer ${ingestKey}` },
      body: JSON.stringify({ events: [{ type: 'impression' }] }),
    });
    expect(batch.status).toBe(503);
    expect(batch.headers.get('retry-after')).toBe('1');
  });

  it('keeps the functions closed to the API roles other than service_role', async () => {
    for (const role of ['anon', 'authenticated']) {
      const code = await test.db
        .transaction(async (tx) => {
          await tx.query(`set local role ${role}`);
          await tx.query(`select public.ingest_events('{"events": []}')`);
        })
        .then(() => 'allowed', (error: { code?: string }) => error.code);
      expect({ role, code }).toEqual({ role, code: '42501' });
    }
  });
});
