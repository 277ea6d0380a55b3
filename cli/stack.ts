import type { NodeConfig } from '../core/config.ts';
import { openEmbeddedPglite, lockDataDir, readStackState, servePglite, type DataDirLock } from '../core/db/embedded.ts';
import { PreciseError } from '../core/errors.ts';
import { migrate, type MigrationReport } from '../core/db/migrate.ts';
import { openPostgres } from '../core/db/postgres.ts';
import type { Database } from '../core/db/port.ts';
import { loadServerSecret } from '../core/server-secret.ts';
import { nodeServices, startHttpServer } from '../functions/node.ts';
import * as attributionModels from '../scheduled/attribution/models.ts';
import * as fatigueDetector from '../scheduled/fatigue/detector.ts';
import { startScheduler, type Scheduler } from '../scheduled/scheduler.ts';

/**
 * The whole local stack in one process: the database (DATABASE_URL, or the embedded PGlite
 * under the data dir, served on a Postgres socket), migrations, the HTTP server and the
 * pg-boss scheduler. `stop()` takes it down in reverse order.
 */
export interface RunningStack {
  httpUrl: string;
  databaseUrl: string;
  embedded: boolean;
  db: Database;
  stop(): Promise<void>;
}

export async function startStack(config: NodeConfig, log: (line: string) => void): Promise<RunningStack> {
  const stops: Array<() => Promise<unknown>> = [];
  const stop = async () => {
    for (const step of stops.reverse()) await step().catch((error) => log(`stop: ${String(error)}`));
  };

  try {
    let databaseUrl: string;
    const embedded = !config.DATABASE_URL;
    let lock: DataDirLock | undefined;
    if (config.DATABASE_URL) {
      databaseUrl = config.DATABASE_URL;
      const migrator = openPostgres({ connectionString: databaseUrl, max: 1, applicationName: 'precise-migrate' });
      stops.push(() => migrator.close());
      logMigration(await migrate(migrator), log);
    } else {
      lock = await lockDataDir(config.PRECISE_DATA_DIR);
      stops.push(() => lock!.release());
      const pglite = await openEmbeddedPglite(config.PRECISE_DATA_DIR);
      stops.push(() => pglite.close());
      logMigration(await migrate(pglite), log);
      const socket = await servePglite(pglite.pglite, config.PRECISE_PG_PORT, '127.0.0.1');
      stops.push(() => socket.stop());
      databaseUrl = socket.databaseUrl;
      log(`database: embedded PGlite in ${config.PRECISE_DATA_DIR}, served at ${databaseUrl}`);
    }

    // Everything in this process reaches the database the way other processes do, so an
    // embedded PGlite never sees two clients' transactions interleave.
    const db = openPostgres({ connectionString: databaseUrl, max: 10, applicationName: 'precise-http' });
    stops.push(() => db.close());

    const serverSecret = await loadServerSecret(config);
    if (config.PRECISE_JOBS === 'on') {
      const scheduler: Scheduler = await startScheduler({ connectionString: databaseUrl, db, log, defaults: jobDefaults(config, serverSecret) });
      stops.push(() => scheduler.stop());
      log('jobs: pg-boss scheduler running');
    }

    const http = await startHttpServer({ services: nodeServices(db, config, serverSecret, attributionModels, fatigueDetector), port: config.PORT, host: config.HOST, limits: config });
    stops.push(() => http.close());
    await lock?.update({ databaseUrl, httpUrl: http.url });
    log(`http: listening on ${http.url} (GET ${http.url}/healthz)`);

    return { httpUrl: http.url, databaseUrl, embedded, db, stop };
  } catch (error) {
    await stop();
    throw error;
  }
}

/**
 * What the configuration says to every run of a job. The alert webhooks' signing secrets derive
 * from the server secret: it is handed to that job here, in memory (pg-boss stores only what a
 * run was sent with, and the scheduler logs a run's result, never its input).
 */
export function jobDefaults(config: NodeConfig, serverSecret: string): Record<string, object> {
  return {
    'partition-upkeep': config.PRECISE_RETENTION_DAYS ? { retentionDays: config.PRECISE_RETENTION_DAYS } : {},
    'alert-webhooks': { serverSecret, allowLocalhost: config.ALERT_WEBHOOK_ALLOW_LOCALHOST === 'true' },
  };
}

function logMigration(report: MigrationReport, log: (line: string) => void) {
  if (report.bootstrapped) log('database: applied the Supabase compatibility bootstrap');
  log(`database: ${report.applied.length} migration(s) applied, ${report.skipped.length} already applied`);
}

/**
 * A job worker without HTTP: pg-boss on the database of DATABASE_URL, or of a running
 * `precise start` (its socket). Several can run at once; pg-boss's exclusive queues and the
 * rollup's lock keep them from doing the same work twice.
 */
export async function startWorker(config: NodeConfig, log: (line: string) => void) {
  const running = config.DATABASE_URL ? undefined : await readStackState(config.PRECISE_DATA_DIR);
  const databaseUrl = config.DATABASE_URL ?? running?.databaseUrl;
  if (!databaseUrl) {
    throw new PreciseError('invalid_argument', 'precise worker needs DATABASE_URL, or a running precise start in this data dir');
  }
  // the same server secret as the HTTP side's (PRECISE_SECRET, or the data dir's): a worker
  // elsewhere needs PRECISE_SECRET, else its alerts refuse to sign (alert_webhooks.secret_hash)
  const serverSecret = await loadServerSecret(config);
  const db = openPostgres({ connectionString: databaseUrl, max: 4, applicationName: 'precise-worker' });
  try {
    const scheduler = await startScheduler({ connectionString: databaseUrl, db, log, defaults: jobDefaults(config, serverSecret) });
    log('jobs: pg-boss worker running');
    return {
      databaseUrl,
      stop: async () => {
        await scheduler.stop();
        await db.close();
      },
    };
  } catch (error) {
    await db.close();
    throw error;
  }
}
