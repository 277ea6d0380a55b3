import { PreciseError } from './core/errors.ts';
import type { Bindings } from './functions/env.ts';
import { edgeBackend, edgeHandlers } from './functions/edge.ts';
import type { QueueMessage } from './functions/sinks/queue.ts';
import * as attributionModels from './scheduled/attribution/models.ts';
import * as fatigueDetector from './scheduled/fatigue/detector.ts';
import { runCronJobs } from './scheduled/cron.ts';

/**
 * The Cloudflare Worker (wrangler.toml's `main`): HTTP and the event queue from functions/,
 * and, for a deployment without a Node worker, the cron triggers from scheduled/ (the rollup
 * every minute, attribution every five, creative fatigue hourly, partition upkeep daily, alert
 * webhooks every minute), on the same database as the requests; the attribution models and the
 * fatigue detector (scheduled/) are handed to the HTTP side here.
 */
async function runScheduled(cron: string, env: Bindings): Promise<void> {
  const backend = edgeBackend(env);
  if (!backend.readDb) throw new PreciseError('config_invalid', 'scheduled jobs need DB_DRIVER=hyperdrive');
  // the server secret goes to the job that derives signing secrets from it, never to a log
  const runs = await runCronJobs(cron, backend.readDb, { 'alert-webhooks': { serverSecret: env.PRECISE_SECRET } });
  for (const { job, result, error } of runs) console.log(`scheduled ${job}: ${error ? `failed: ${error}` : JSON.stringify(result)}`);
  const failed = runs.find((run) => run.error);
  if (failed) throw new Error(`scheduled ${failed.job} failed: ${failed.error}`);
}

export default {
  ...edgeHandlers(attributionModels, fatigueDetector),
  scheduled: (controller, env, ctx) => ctx.waitUntil(runScheduled(controller.cron, env)),
} satisfies ExportedHandler<Bindings, QueueMessage>;
