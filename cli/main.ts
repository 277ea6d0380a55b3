import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import {
  assertUuid,
  createApiKey,
  createCampaign,
  createIntegration,
  createOrganization,
  removeAlertWebhook,
  setAlertWebhook,
} from '../core/admin.ts';
import { alertDeliveryLog, sqlAlertLogReader } from '../core/alerts/log.ts';
import { webhookSecret } from '../core/webhooks/delivery.ts';
import { listFailedEvents, replayFailedEvents, type FailedEventFilter } from '../core/ingest/replay.ts';
import { progressBar } from './progress.ts';
import { KeyCache, sqlKeyStore } from '../core/auth.ts';
import { parseDestination, signClick } from '../core/click.ts';
import { deriveSecret } from '../core/secrets.ts';
import { loadServerSecret } from '../core/server-secret.ts';
import { parseNodeConfig, type NodeConfig } from '../core/config.ts';
import { DataDirBusyError } from '../core/db/embedded.ts';
import { migrate } from '../core/db/migrate.ts';
import { PreciseError } from '../core/errors.ts';
import type { KeyKind, KeyScope } from '../core/keys.ts';
import { jobDefaults, startStack, startWorker } from './stack.ts';
import { findJob, JOBS } from '../scheduled/jobs/index.ts';
import { jobsStatus } from '../scheduled/status.ts';
import { withCliDatabase } from './database.ts';

const SEED_FILE = fileURLToPath(new URL('../supabase/seed.sql', import.meta.url));

/** Where a command writes; tests pass their own. */
export interface CliIo {
  out: (text: string) => void;
  err: (text: string) => void;
  env: Record<string, string | undefined>;
  /** Resolves when the process is asked to stop (SIGINT/SIGTERM); `start` waits on it. */
  stopSignal: () => Promise<string>;
}

const USAGE = `precise: the Precise event backend

usage: precise <command> [options] [--json]

  start                                  run the whole stack (database, HTTP, jobs)
  worker                                 run the pg-boss job worker only (any number, on DATABASE_URL)
  migrate                                apply supabase/migrations
  org create --name NAME [--kind data_owner|media_buyer|both] [--properties JSON]
  key create --org ORG_ID --kind publishable|secret|postback [--scopes ingest,read,admin] [--name NAME]
             [--properties JSON]         e.g. a postback token's {"param_map": {"aff_click": "click_id"}}
                                         prints the key once; only its hash is stored
  campaign create --org ORG_ID --name NAME [--status draft|active|...] [--properties JSON]
  integration create --org ORG_ID --name NAME [--mapping FILE]
                                         a DSP integration; prints its webhook URL and whsec_ secret
  alerts set --org ORG_ID --url URL [--events TYPE,...] [--rotate-secret]
                                         the organization's alert webhook (creative_fatigue_detected,
                                         creative_fatigue_cleared); prints its whsec_ signing secret
                                         the first time and on --rotate-secret only
  alerts remove --org ORG_ID             no more alerts (pending deliveries fail, unsent)
  alerts log --org ORG_ID [--status pending|delivered|failed] [--limit N]
                                         the webhook's state and its newest deliveries
  click-url --key PK --url URL [--cmp CAMPAIGN_ID] [--crv CREATIVE_ID] [--base BASE_URL]
                                         a signed click URL (GET /v1/click) for a publishable key
  failed list [--org ORG_ID] [--id ID] [--all] [--limit N]
                                         refused events not yet replayed (--all: every one)
  failed replay [--org ORG_ID] [--id ID] [--all] [--limit N] [ID ...]
                                         replay them through the path they first took (a postback
                                         as a postback, a webhook item through its mapping), under
                                         the id they were first given: replaying twice stores once
  seed                                   load the demo data of supabase/seed.sql (idempotent)
  jobs status                            last runs, durations, queued work and failures of every job
  jobs run NAME [--from TIME --to TIME]  run a scheduled job once (rollup, attribution with --from/--to: recompute that range; creative-fatigue re-steps what changed; alert-webhooks sends what is due) (${JOBS.map((job) => job.name).join(', ')})

  --json                                 machine-readable output
Configuration comes from the environment: DATABASE_URL (else the embedded PGlite under
PRECISE_DATA_DIR, default .data), PORT (default 8787), PRECISE_PG_PORT, PRECISE_JOBS.`;

const OPTIONS = {
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
  name: { type: 'string' },
  kind: { type: 'string' },
  org: { type: 'string' },
  scopes: { type: 'string' },
  status: { type: 'string' },
  properties: { type: 'string' },
  id: { type: 'string' },
  limit: { type: 'string' },
  all: { type: 'boolean' },
  key: { type: 'string' },
  url: { type: 'string' },
  cmp: { type: 'string' },
  crv: { type: 'string' },
  base: { type: 'string' },
  mapping: { type: 'string' },
  from: { type: 'string' },
  to: { type: 'string' },
  events: { type: 'string' },
  'rotate-secret': { type: 'boolean' },
} satisfies ParseArgsConfig['options'];

type Flags = { [K in keyof typeof OPTIONS]?: (typeof OPTIONS)[K]['type'] extends 'boolean' ? boolean : string };

interface Context {
  flags: Flags;
  config: NodeConfig;
  io: CliIo;
  /** Prints a result: JSON as is with --json, else the human line. */
  print: (value: unknown, human: string) => void;
}

type Command = (context: Context, positionals: string[]) => Promise<number>;

const COMMANDS: Record<string, Command> = {
  start: runStart,
  migrate: runMigrate,
  worker: runWorker,
  'org create': runOrgCreate,
  'key create': runKeyCreate,
  'campaign create': runCampaignCreate,
  'jobs run': runJob,
  'jobs status': runJobsStatus,
  seed: runSeed,
  'click-url': runClickUrl,
  'integration create': runIntegrationCreate,
  'alerts set': runAlertsSet,
  'alerts remove': runAlertsRemove,
  'alerts log': runAlertsLog,
  'failed list': runFailedList,
  'failed replay': runFailedReplay,
};

export async function main(argv: string[], io: CliIo = processIo()): Promise<number> {
  let json = argv.includes('--json');
  try {
    const { values, positionals } = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true, strict: true });
    const flags = values as Flags;
    json = flags.json ?? false;
    const commandName = [positionals.slice(0, 2).join(' '), positionals[0] ?? ''].find((name) => name in COMMANDS);
    if (flags.help || positionals.length === 0 || positionals[0] === 'help') {
      io.out(USAGE);
      return positionals.length === 0 && !flags.help ? 2 : 0;
    }
    if (!commandName) {
      throw new PreciseError('invalid_argument', `unknown command "${positionals.join(' ')}" (see precise --help)`);
    }
    const context: Context = {
      flags,
      config: parseNodeConfig(io.env),
      io,
      print: (value, human) => io.out(json ? JSON.stringify(value, null, 2) : human),
    };
    return await COMMANDS[commandName]!(context, positionals.slice(commandName.split(' ').length));
  } catch (error) {
    return reportError(error, json, io);
  }
}

function reportError(error: unknown, json: boolean, io: CliIo): number {
  let preciseError: PreciseError;
  if (error instanceof PreciseError) preciseError = error;
  else if (error instanceof DataDirBusyError) preciseError = new PreciseError('conflict', error.message);
  else if (error instanceof Error && (error as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
    preciseError = new PreciseError('invalid_argument', error.message);
  } else preciseError = new PreciseError('internal', error instanceof Error ? error.message : String(error));
  io.err(json ? JSON.stringify(preciseError.toBody()) : `precise: ${preciseError.message}`);
  return preciseError.code === 'invalid_argument' || preciseError.code === 'validation_failed' ? 2 : 1;
}

function required(flags: Flags, name: keyof Flags): string {
  const value = flags[name];
  if (typeof value !== 'string' || value.trim() === '') {
    throw new PreciseError('invalid_argument', `--${name} is required`, { field: name });
  }
  return value;
}

function jsonObject(flags: Flags, name: 'properties'): Record<string, unknown> | undefined {
  const text = flags[name];
  if (text === undefined) return undefined;
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new PreciseError('invalid_argument', `--${name} is not valid JSON: ${(error as Error).message}`, {
      field: name,
    });
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new PreciseError('invalid_argument', `--${name} must be a JSON object`, { field: name });
  }
  return value as Record<string, unknown>;
}

async function runStart({ config, io }: Context): Promise<number> {
  const stack = await startStack(config, (line) => io.out(line));
  io.out(`precise is running: ${stack.httpUrl}  (Ctrl-C to stop)`);
  const signal = await io.stopSignal();
  io.out(`${signal}: stopping`);
  await stack.stop();
  io.out('stopped');
  return 0;
}

async function runWorker({ config, io }: Context): Promise<number> {
  const worker = await startWorker(config, (line) => io.out(line));
  io.out(`precise worker is running on ${worker.databaseUrl.replace(/:[^:@/]*@/, ':***@')}  (Ctrl-C to stop)`);
  const signal = await io.stopSignal();
  io.out(`${signal}: stopping`);
  await worker.stop();
  io.out('stopped');
  return 0;
}

async function runMigrate(context: Context): Promise<number> {
  const report = await withCliDatabase(context.config, (db) => migrate(db));
  context.print(
    report,
    `${report.applied.length} migration(s) applied${report.applied.length ? `: ${report.applied.join(', ')}` : ''}; ` +
      `${report.skipped.length} already applied`,
  );
  return 0;
}

async function runOrgCreate(context: Context): Promise<number> {
  const { flags } = context;
  const org = await withCliDatabase(context.config, (db) =>
    createOrganization(db, { name: required(flags, 'name'), kind: flags.kind, properties: jsonObject(flags, 'properties') }),
  );
  context.print(org, `organization ${org.id} (${org.name}, ${org.kind})`);
  return 0;
}

async function runKeyCreate(context: Context): Promise<number> {
  const { flags } = context;
  const scopes = flags.scopes
    ?.split(',')
    .map((scope) => scope.trim())
    .filter(Boolean) as KeyScope[] | undefined;
  const created = await withCliDatabase(context.config, (db) =>
    createApiKey(db, {
      orgId: required(flags, 'org'),
      kind: required(flags, 'kind') as KeyKind,
      scopes,
      name: flags.name,
      properties: jsonObject(flags, 'properties'),
    }),
  );
  context.print(
    created,
    `${created.key}\n${created.kind} key ${created.id}${created.scopes.length ? ` [${created.scopes.join(', ')}]` : ''}: ` +
      'store it now, it is not shown again',
  );
  return 0;
}

async function runCampaignCreate(context: Context): Promise<number> {
  const { flags } = context;
  const campaign = await withCliDatabase(context.config, (db) =>
    createCampaign(db, {
      orgId: required(flags, 'org'),
      name: required(flags, 'name'),
      status: flags.status,
      properties: jsonObject(flags, 'properties'),
    }),
  );
  context.print(campaign, `campaign ${campaign.id} (${campaign.name}, ${campaign.status})`);
  return 0;
}

async function runSeed(context: Context): Promise<number> {
  const counts = await withCliDatabase(context.config, async (db) => {
    await db.transaction(async (tx) => {
      await tx.query(`select set_config('precise.actor', 'cli:seed', true)`);
      await tx.exec(await readFile(SEED_FILE, 'utf8'));
    });
    const { rows } = await db.query<{ organizations: number; campaigns: number; data_assets: number }>(
      `select (select count(*) from organizations)::int as organizations,
              (select count(*) from campaigns)::int as campaigns,
              (select count(*) from data_assets)::int as data_assets`,
    );
    return rows[0]!;
  });
  context.print(
    counts,
    `demo data loaded: ${counts.organizations} organizations, ${counts.campaigns} campaigns, ${counts.data_assets} data assets`,
  );
  return 0;
}

async function runIntegrationCreate(context: Context): Promise<number> {
  const { flags } = context;
  let mapping: unknown;
  if (flags.mapping !== undefined) {
    let text: string;
    try {
      text = await readFile(flags.mapping, 'utf8');
    } catch (error) {
      throw new PreciseError('invalid_argument', `cannot read --mapping ${flags.mapping}: ${(error as Error).message}`, { field: 'mapping' });
    }
    try {
      mapping = JSON.parse(text);
    } catch (error) {
      throw new PreciseError('invalid_argument', `--mapping is not valid JSON: ${(error as Error).message}`, { field: 'mapping' });
    }
  }
  const integration = await withCliDatabase(context.config, (db) =>
    createIntegration(db, { orgId: required(flags, 'org'), name: required(flags, 'name'), mapping }),
  );
  const secret = webhookSecret(await loadServerSecret(context.config), integration.id, 1);
  const url = `${(flags.base ?? `http://${context.config.HOST}:${context.config.PORT}`).replace(/\/$/, '')}/v1/webhooks/${integration.id}`;
  context.print(
    { ...integration, webhook_url: url, secret },
    `integration ${integration.id} (${integration.name})\nwebhook URL: ${url}\nsigning secret: ${secret}\n` +
      'sign each delivery: x-precise-signature: t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>">',
  );
  return 0;
}

async function runAlertsSet(context: Context): Promise<number> {
  const { flags, config } = context;
  const events = flags.events?.split(',').map((event) => event.trim()).filter(Boolean);
  const serverSecret = await loadServerSecret(config);
  const webhook = await withCliDatabase(config, (db) =>
    setAlertWebhook(
      db,
      { orgId: required(flags, 'org'), url: required(flags, 'url'), events, rotateSecret: flags['rotate-secret'] },
      serverSecret,
      { allowLocalhost: config.ALERT_WEBHOOK_ALLOW_LOCALHOST === 'true' },
    ),
  );
  const head = `alerts of ${webhook.org_id}: POST ${webhook.webhook_url} (${webhook.events.join(', ')})`;
  context.print(
    webhook,
    webhook.secret
      ? `${head}\nsigning secret (version ${webhook.secret_version}): ${webhook.secret}\n` +
          'store it now, it is not shown again; verify the webhook-signature of each delivery with it (Standard Webhooks)'
      : `${head}\nsigning secret unchanged (version ${webhook.secret_version}; --rotate-secret for a new one)`,
  );
  return 0;
}

async function runAlertsRemove(context: Context): Promise<number> {
  const result = await withCliDatabase(context.config, (db) => removeAlertWebhook(db, required(context.flags, 'org')));
  context.print(result, result.removed ? `alerts of ${result.org_id} removed` : `${result.org_id} had no alerts`);
  return 0;
}

async function runAlertsLog(context: Context): Promise<number> {
  const { flags } = context;
  const orgId = required(flags, 'org');
  assertUuid(orgId, 'org');
  const log = await withCliDatabase(context.config, (db) =>
    alertDeliveryLog(sqlAlertLogReader(db), orgId, { status: flags.status, limit: flags.limit }),
  );
  const when = (value: string | null) => value ?? '-';
  const lines = [
    log.webhook.webhook_url
      ? `webhook: ${log.webhook.webhook_url}${log.webhook.disabled_url === log.webhook.webhook_url ? ` (disabled: 410 at ${log.webhook.disabled_at})` : ''}`
      : 'webhook: none',
    ...log.data.map(
      (row) =>
        `${row.created_at}  ${row.event_type}  ${row.event_id}  ${row.status}, ${row.attempts} attempt(s)` +
        (row.status === 'pending' ? `, next ${when(row.next_attempt_at)}` : '') +
        (row.last_error ? `: ${row.last_error}` : ''),
    ),
  ];
  context.print(log, lines.join('\n'));
  return 0;
}

async function runClickUrl(context: Context): Promise<number> {
  const { flags } = context;
  const key = required(flags, 'key');
  const url = required(flags, 'url');
  parseDestination(url);
  if (flags.cmp) assertUuid(flags.cmp, 'cmp');
  const base = flags.base ?? `http://${context.config.HOST}:${context.config.PORT}`;
  const resolved = await withCliDatabase(context.config, (db) => new KeyCache(sqlKeyStore(db)).resolve(key));
  if (!resolved || resolved.kind !== 'publishable') {
    throw new PreciseError('invalid_argument', '--key must be a live publishable key (pk_…) of this deployment', { field: 'key' });
  }
  const secret = deriveSecret(await loadServerSecret(context.config), 'click-signing', resolved.id);
  const params = new URLSearchParams({ key, url });
  if (flags.cmp) params.set('cmp', flags.cmp);
  if (flags.crv) params.set('crv', flags.crv);
  params.set('sig', signClick(secret, url, flags.cmp, flags.crv));
  const clickUrl = `${base.replace(/\/$/, '')}/v1/click?${params}`;
  context.print({ url: clickUrl }, clickUrl);
  return 0;
}

function failedFilter(flags: Flags, positionals: string[] = []): FailedEventFilter {
  if (flags.org) assertUuid(flags.org, 'org');
  const ids = [...(flags.id ? [flags.id] : []), ...positionals];
  for (const id of ids) assertUuid(id, 'id');
  let limit: number | undefined;
  if (flags.limit !== undefined) {
    limit = Number(flags.limit);
    if (!Number.isInteger(limit) || limit < 1) {
      throw new PreciseError('invalid_argument', '--limit must be a positive integer', { field: 'limit' });
    }
  }
  return { orgId: flags.org, ids: ids.length > 0 ? ids : undefined, all: flags.all, limit };
}

async function runFailedList(context: Context): Promise<number> {
  const rows = await withCliDatabase(context.config, (db) => listFailedEvents(db, failedFilter(context.flags)));
  const human =
    rows.length === 0
      ? 'no failed events'
      : rows
          .map(
            (row) =>
              `${row.id}  ${row.received_at.toISOString()}  ${row.source}  ${row.reason_code}` +
              `${row.field ? ` (${row.field})` : ''}: ${row.reason}` +
              (row.replay_count > 0 ? `  [replayed ${row.replay_count}x]` : ''),
          )
          .join('\n');
  context.print(rows, human);
  return 0;
}

async function runFailedReplay(context: Context, positionals: string[]): Promise<number> {
  const filter = failedFilter(context.flags, positionals);
  const progress = progressBar('replay', (line) => context.io.err(line));
  const summary = await withCliDatabase(context.config, (db) =>
    replayFailedEvents(db, filter, ({ done, total }) => progress(done, total)),
  );
  context.print(
    summary,
    `replayed ${summary.replayed}: ${summary.stored} stored, ${summary.duplicates} already stored, ${summary.refused} still refused`,
  );
  return summary.refused > 0 ? 1 : 0;
}

async function runJobsStatus(context: Context): Promise<number> {
  const status = await withCliDatabase(context.config, (db) => jobsStatus(db));
  const when = (date: Date | null) => (date ? new Date(date).toISOString() : 'never');
  const lines = [
    status.scheduler_installed ? 'scheduler: installed' : 'scheduler: never started on this database (precise start or precise worker)',
    ...status.jobs.map(
      (job) =>
        `${job.name.padEnd(18)} ${String(job.cron ?? '-').padEnd(12)} last ${when(job.last_completed_at)}` +
        `${job.last_duration_ms !== null ? ` (${job.last_duration_ms} ms)` : ''}  queued ${job.queued}  active ${job.active}  failed ${job.failures}` +
        (job.last_output ? `\n${' '.repeat(19)}${JSON.stringify(job.last_output)}` : ''),
    ),
    ...status.rollups.map(
      (r: any) => `rollup ${r.name}: watermark ${r.watermark}, ${r.runs} runs, last ${when(r.last_run_at)}: ${r.last_events ?? 0} events, ${r.last_buckets ?? 0} buckets, ${r.last_rows ?? 0} rows in ${r.last_duration_ms ?? 0} ms`,
    ),
  ];
  context.print(status, lines.join('\n'));
  return 0;
}

async function runJob(context: Context, positionals: string[]): Promise<number> {
  const name = positionals[0];
  const job = name ? findJob(name) : undefined;
  if (!job) {
    throw new PreciseError('invalid_argument', `jobs run needs a job name: ${JOBS.map((j) => j.name).join(', ')}`, {
      field: 'name',
    });
  }
  const started = performance.now();
  const input = {
    ...jobDefaults(context.config, await loadServerSecret(context.config))[job.name],
    ...(context.flags.from ? { from: context.flags.from } : {}),
    ...(context.flags.to ? { to: context.flags.to } : {}),
  };
  const progress = progressBar(job.name, (line) => context.io.err(line));
  const result = await withCliDatabase(context.config, (db) => job.run(db, input, ({ done, total }) => progress(done, total)));
  const ms = Math.round(performance.now() - started);
  context.print({ job: job.name, ms, result }, `${job.name}: done in ${ms} ms ${JSON.stringify(result)}`);
  return 0;
}

function processIo(): CliIo {
  return {
    out: (text) => process.stdout.write(`${text}\n`),
    err: (text) => process.stderr.write(`${text}\n`),
    env: process.env,
    stopSignal: () =>
      new Promise((resolve) => {
        process.once('SIGINT', () => resolve('SIGINT'));
        process.once('SIGTERM', () => resolve('SIGTERM'));
      }),
  };
}
