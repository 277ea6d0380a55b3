import { z } from 'zod';
import { PreciseError } from './errors.ts';
import { parseRateSpec, RATE_SPEC } from './rate-limit.ts';

const rate = (fallback: string) =>
  z
    .string()
    .regex(new RegExp(`${RATE_SPEC.source}|^off$`), 'must be N/Ss (N requests per S seconds, e.g. 50/10s) or off')
    .default(fallback)
    .transform((text) => parseRateSpec(text));

/**
 * Abuse limits, shared by Node (process.env) and the Worker (vars; a `[[ratelimits]]` binding of
 * the same name replaces the in-isolate limiter). The defaults let one address send tens of
 * thousands of requests per second (benchmarks and NATs) but only a trickle of unknown keys.
 */
export const LimitsEnvSchema = z.object({
  /** requests that present a key, per client address (IPv4, IPv6 /64) */
  RATE_LIMIT_ADDRESS: rate('20000/1s'),
  /** requests per API key */
  RATE_LIMIT_KEY: rate('20000/1s'),
  /** database lookups of keys not in the cache, per client address */
  RATE_LIMIT_KEY_LOOKUPS_PER_ADDRESS: rate('50/10s'),
  /** database lookups of keys not in the cache, all addresses together */
  RATE_LIMIT_KEY_LOOKUPS: rate('300/10s'),
  /** browser origins allowed to call the secret-key API (comma-separated; the pixel and click allow any) */
  CORS_ORIGINS: z
    .string()
    .default('')
    .transform((text) => text.split(',').map((origin) => origin.trim()).filter(Boolean))
    .pipe(z.array(z.string().regex(/^(https?:\/\/[^/\s]+|\*)$/, 'must be origins like https://app.example.com (or *), comma-separated'))),
});

export type LimitsConfig = z.infer<typeof LimitsEnvSchema>;

/**
 * Node-side configuration, parsed once from the environment. Anything wrong stops start-up
 * with a message naming the variable, instead of failing later in a request.
 */
const NodeEnvSchema = z.object({
  DATABASE_URL: z
    .string()
    .regex(/^postgres(ql)?:\/\//, 'must be a postgres:// or postgresql:// URL')
    .optional()
    .or(z.literal('').transform(() => undefined)),
  PORT: z.coerce.number().int().min(0).max(65535).default(8787),
  HOST: z.string().default('127.0.0.1'),
  /** Where the embedded PGlite database and the stack's state file live. */
  PRECISE_DATA_DIR: z.string().default('.data'),
  /** Port of the embedded database's Postgres socket (psql, wrangler dev and the CLI use it). */
  PRECISE_PG_PORT: z.coerce.number().int().min(0).max(65535).default(54329),
  /** Raw events older than this many days are dropped by whole partitions (metrics stay); unset: kept. */
  PRECISE_RETENTION_DAYS: z.coerce.number().int().min(1).optional(),
  /** Run the pg-boss scheduler inside `precise start`. */
  PRECISE_JOBS: z.enum(['on', 'off']).default('on'),
  /** Server secret from which click-signing and webhook secrets are derived (else kept in the data dir). */
  PRECISE_SECRET: z.string().min(32, 'must be at least 32 characters').optional(),
  /** Secret for the daily IP hash. Unset: a random one per process (hashes then differ across restarts). */
  IP_HASH_SECRET: z.string().min(16, 'must be at least 16 characters').optional(),
  /** Behind a reverse proxy: take the client IP from the first x-forwarded-for entry. */
  TRUST_PROXY: z.enum(['true', 'false']).default('false'),
  /** Development only: alert webhooks may go to http(s)://localhost, 127.0.0.1 or [::1] (never other private addresses). */
  ALERT_WEBHOOK_ALLOW_LOCALHOST: z.enum(['true', 'false']).default('false'),
  /** Group commit: a write starts at this many events ... */
  INGEST_MAX_BATCH: z.coerce.number().int().min(1).max(10_000).default(1000),
  /** ... or this many ms after the first waiting event */
  INGEST_MAX_WAIT_MS: z.coerce.number().int().min(0).max(1000).default(2),
  /** events allowed to wait before requests get 503 */
  INGEST_MAX_PENDING: z.coerce.number().int().min(1).default(50_000),
  /** writes in flight at once */
  INGEST_CONCURRENCY: z.coerce.number().int().min(1).max(64).default(4),
  /** a request's headers must arrive within this (slowloris) */
  HTTP_HEADERS_TIMEOUT_MS: z.coerce.number().int().min(100).default(10_000),
  /** a whole request (headers and body) must arrive within this */
  HTTP_REQUEST_TIMEOUT_MS: z.coerce.number().int().min(100).default(30_000),
  /** an idle keep-alive connection is closed after this */
  HTTP_KEEP_ALIVE_TIMEOUT_MS: z.coerce.number().int().min(100).default(5_000),
  /** open connections at once; beyond, new ones are closed on accept */
  HTTP_MAX_CONNECTIONS: z.coerce.number().int().min(1).default(10_000),
}).extend(LimitsEnvSchema.shape);

export type NodeConfig = z.infer<typeof NodeEnvSchema>;

export function parseNodeConfig(env: Record<string, string | undefined> = process.env): NodeConfig {
  return parseWith(NodeEnvSchema, env);
}

/** The limits alone, for the Worker (its vars). */
export function parseLimitsConfig(env: Record<string, unknown>): LimitsConfig {
  return parseWith(LimitsEnvSchema, env);
}

function parseWith<S extends z.ZodType>(schema: S, env: Record<string, unknown>): z.infer<S> {
  const parsed = schema.safeParse(env);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    // the variable (a list's item index stays in the message)
    const field = String(issue.path[0]);
    throw new PreciseError('config_invalid', `${issue.path.join('.')}: ${issue.message}`, { field });
  }
  return parsed.data;
}
