import { Hono } from 'hono';
import type { AppEnv } from '../env.ts';

/** GET /healthz: 200 only when the database answers a query within the deadline. */
export const healthRoutes = new Hono<AppEnv>();

const DATABASE_DEADLINE_MS = 2_000;

healthRoutes.get('/', async (c) => {
  const started = performance.now();
  try {
    await withDeadline(c.get('services').ping(), DATABASE_DEADLINE_MS);
    return c.json({ status: 'ok', database: { ok: true, latency_ms: Math.round(performance.now() - started) } });
  } catch (error) {
    // The reason goes to the operator's log, not to an anonymous caller.
    console.error(`[${c.get('requestId')}] healthz: database check failed:`, error);
    return c.json({ status: 'unavailable', database: { ok: false } }, 503);
  }
});

function withDeadline<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`database did not answer within ${ms} ms`)), ms);
  });
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}
