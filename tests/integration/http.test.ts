import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp } from '../../functions/app.ts';
import { openPostgres } from '../../core/db/postgres.ts';
import { BACKEND } from '../helpers/database.ts';
import { createIngestHarness, type IngestHarness } from '../helpers/ingest.ts';

describe(`HTTP app (${BACKEND})`, () => {
  let h: IngestHarness;
  beforeAll(async () => {
    h = await createIngestHarness();
  });
  afterAll(() => h?.close());

  it('answers /healthz with 200 when the database answers', async () => {
    const response = await h.app.request('/healthz');
    expect(response.status).toBe(200);
    const body = (await response.json()) as { status: string; database: { ok: boolean; latency_ms: unknown } };
    expect(body).toMatchObject({ status: 'ok', database: { ok: true } });
    expect(typeof body.database.latency_ms).toBe('number');
    expect(response.headers.get('x-request-id')).toBeTruthy();
  });

  it('answers /healthz with 503 when the database does not, without leaking why', async () => {
    // A real connection attempt to a port where nothing listens.
    const unreachable = openPostgres({ connectionString: 'postgres://postgres@127.0.0.1:1/postgres' });
    const app = createApp({ services: () => ({ ...h.services, ping: async () => void (await unreachable.query('select 1')) }) });
    const errors: unknown[] = [];
    const original = console.error;
    console.error = (...args: unknown[]) => errors.push(args);
    try {
      const response = await app.request('/healthz');
      expect(response.status).toBe(503);
      const text = await response.text();
      expect(JSON.parse(text)).toEqual({ status: 'unavailable', database: { ok: false } });
      expect(text).not.toContain('127.0.0.1');
      expect(errors.length).toBe(1);
    } finally {
      console.error = original;
      await unreachable.close();
    }
  });

  it('answers an unknown route with the JSON error body', async () => {
    const response = await h.app.request('/v1/nope', { headers: { 'x-request-id': 'req-123' } });
    expect(response.status).toBe(404);
    expect(await response.json()).toEqual({
      error: { code: 'not_found', message: 'no route for GET /v1/nope', details: {}, request_id: 'req-123' },
    });
  });
});
