import { PreciseError } from './core/errors.ts';
import type { Bindings } from './functions/env.ts';
import { edgeBackend, edgeHandlers } from './functions/edge.ts';
import type { QueueMessage } from './functions/sinks/queue.ts';
import * as attributionModels from './scheduled/attribution/models.ts';
import * as fatigueDetector from './scheduled/fatigue/detector.ts';
import { runCronJob } from './scheduled/cron.ts';

/**
 * The Cloudflare Worker (wrangler.toml's `main`): HTTP and the event queue from functions/,
 * and, for a deployment without a Node worker, the cron triggers from scheduled/ (the rollup
 * every minute, attribution every five, creative fatigue hourly, partition upkeep daily), on the same database as the
 * requests; the attribution models and the fatigue detector (scheduled/) are handed to the HTTP side here.
 */
async function runScheduled(cron: string, env: Bindings): Promise<void> {
  const backend = edgeBackend(env);
  if (!backend.readDb) throw new PreciseError('config_invalid', 'scheduled jobs need DB_DRIVER=hyperdrive');
  const { job, result } = await runCronJob(cron, backend.readDb);
  console.log(`scheduled ${job}: ${JSON.stringify(result)}`);
}

export default {
  ...edgeHandlers(attributionModels, fatigueDetector),
  scheduled: (controller, env, ctx) => ctx.waitUntil(runScheduled(controller.cron, env)),
} satisfies ExportedHandler<Bindings, QueueMessage>;
