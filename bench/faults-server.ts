/**
 * The Node server of the fault benchmark, in its own process so that it can be SIGKILLed.
 *   DATABASE_URL=postgres://… PORT=18201 [FAULTS_SERVER=precise|ack-before-commit] node --experimental-strip-types bench/faults-server.ts
 * modes:
 *   precise            the stack `precise start` runs (migrations, the HTTP server, group
 *                      commit: a 2xx only after COMMIT) on DATABASE_URL, without the scheduler
 *   ack-before-commit  the control: the same app, but its sink answers at once and writes each
 *                      event a second later, as a buffering collector does; what a SIGKILL
 *                      catches in the buffer is lost, and the benchmark must see it (a SIGTERM
 *                      writes the buffer first)
 * Tells its parent (IPC) its URL once it listens; SIGTERM stops it cleanly.
 */
import { parseNodeConfig } from '../core/config.ts';
import { openPostgres } from '../core/db/postgres.ts';
import type { EventSink } from '../core/ingest/batch.ts';
import { startStack } from '../cli/stack.ts';
import { nodeServices, startHttpServer } from '../functions/node.ts';
import * as attributionModels from '../scheduled/attribution/models.ts';
import * as fatigueDetector from '../scheduled/fatigue/detector.ts';

const config = parseNodeConfig({
  ...process.env,
  PRECISE_JOBS: 'off',
  PRECISE_SECRET: 'faults-server-secret-0123456789-0123456789',
  IP_HASH_SECRET: 'faults-ip-hash-secret-0123456789',
});

async function ackBeforeCommit() {
  const db = openPostgres({ connectionString: config.DATABASE_URL!, max: 10, applicationName: 'faults-ack-early' });
  const services = nodeServices(db, config, config.PRECISE_SECRET!, attributionModels, fatigueDetector);
  const durable = services.sink;
  const buffered = new Set<Promise<unknown>>();
  const early: EventSink = {
    send: async (batch) => {
      const write = new Promise((resolve) => setTimeout(resolve, 1000)).then(() => durable.send(batch)).catch(() => {});
      buffered.add(write);
      void write.finally(() => buffered.delete(write));
      return { outcomes: batch.events.map(() => 'stored' as const) };
    },
    close: async () => {
      await Promise.all(buffered);
      await durable.close?.();
    },
  };
  services.sink = early;
  const http = await startHttpServer({ services, port: config.PORT, host: config.HOST });
  return { httpUrl: http.url, stop: async () => (await http.close(), await db.close()) };
}

const stack = process.env.FAULTS_SERVER === 'ack-before-commit' ? await ackBeforeCommit() : await startStack(config, () => {});
process.send?.({ url: stack.httpUrl });
process.once('SIGTERM', () => void stack.stop().then(() => process.exit(0)));
