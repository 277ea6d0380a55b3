import { serve, type ServerType } from '@hono/node-server';
import { getConnInfo } from '@hono/node-server/conninfo';
import type { Context } from 'hono';
import type { Server as NetServer } from 'node:net';
import type { AttributionMath } from '../core/attribution-query.ts';
import type { FatigueMath } from '../core/fatigue-query.ts';
import { parseNodeConfig, type NodeConfig } from '../core/config.ts';
import { inProcessLimits } from '../core/rate-limit.ts';
import type { Database } from '../core/db/port.ts';
import { createApp } from './app.ts';
import type { AppEnv, Services } from './env.ts';
import { createServices, sqlStores } from './services.ts';
import { GroupCommitSink } from './sinks/group-commit.ts';

/** The Node entry: the same Hono app, served by @hono/node-server, writing through group commit. */
export interface HttpServer {
  url: string;
  services: Services;
  close(): Promise<void>;
}

type IngestConfig = Pick<
  NodeConfig,
  | 'IP_HASH_SECRET'
  | 'TRUST_PROXY'
  | 'INGEST_MAX_BATCH'
  | 'INGEST_MAX_WAIT_MS'
  | 'INGEST_MAX_PENDING'
  | 'INGEST_CONCURRENCY'
  | 'RATE_LIMIT_ADDRESS'
  | 'RATE_LIMIT_KEY'
  | 'RATE_LIMIT_KEY_LOOKUPS_PER_ADDRESS'
  | 'RATE_LIMIT_KEY_LOOKUPS'
  | 'CORS_ORIGINS'
>;

/** Node's own defences against slow and idle clients (core/config.ts). */
export type HttpLimits = Pick<
  NodeConfig,
  'HTTP_HEADERS_TIMEOUT_MS' | 'HTTP_REQUEST_TIMEOUT_MS' | 'HTTP_KEEP_ALIVE_TIMEOUT_MS' | 'HTTP_MAX_CONNECTIONS'
>;

/** The Node process's services: SQL on its pool, group commit, limits counted in the process. */
export function nodeServices(
  db: Database,
  config: IngestConfig,
  serverSecret: string,
  attributionMath: AttributionMath,
  fatigueMath: FatigueMath,
): Services {
  const stores = sqlStores(db);
  return createServices({
    stores,
    sink: new GroupCommitSink(stores.writer, {
      maxBatchEvents: config.INGEST_MAX_BATCH,
      maxWaitMs: config.INGEST_MAX_WAIT_MS,
      maxPendingEvents: config.INGEST_MAX_PENDING,
      concurrency: config.INGEST_CONCURRENCY,
    }),
    serverSecret,
    attributionMath,
    fatigueMath,
    ipHashSecret: config.IP_HASH_SECRET ?? crypto.randomUUID() + crypto.randomUUID(),
    limits: inProcessLimits(config),
    corsOrigins: config.CORS_ORIGINS,
    clientIp: (c: Context<AppEnv>) => {
      if (config.TRUST_PROXY === 'true') {
        const forwarded = c.req.header('x-forwarded-for')?.split(',')[0]?.trim();
        if (forwarded) return forwarded;
      }
      try {
        return getConnInfo(c).remote.address;
      } catch {
        return undefined; // app.request() in tests has no socket
      }
    },
  });
}

export async function startHttpServer(options: {
  services: Services;
  port: number;
  host: string;
  /** absent: the defaults of core/config.ts */
  limits?: Partial<HttpLimits>;
}): Promise<HttpServer> {
  const app = createApp({ services: () => options.services });
  const limits: HttpLimits = { ...parseNodeConfig({}), ...options.limits };
  const serverOptions = {
    headersTimeout: limits.HTTP_HEADERS_TIMEOUT_MS,
    // Node requires headersTimeout ≤ requestTimeout
    requestTimeout: Math.max(limits.HTTP_REQUEST_TIMEOUT_MS, limits.HTTP_HEADERS_TIMEOUT_MS),
    keepAliveTimeout: limits.HTTP_KEEP_ALIVE_TIMEOUT_MS,
    // how often Node looks for connections past those timeouts (its default: every 30 s)
    connectionsCheckingInterval: Math.min(1000, Math.ceil(limits.HTTP_HEADERS_TIMEOUT_MS / 4)),
  };
  const server = await new Promise<ServerType>((resolve, reject) => {
    const s = serve({ fetch: app.fetch, port: options.port, hostname: options.host, serverOptions }, () => resolve(s));
    s.once('error', reject);
  });
  // Beyond the cap, Node closes a new connection as soon as it is accepted.
  (server as NetServer).maxConnections = limits.HTTP_MAX_CONNECTIONS;
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : options.port;
  const stopWarming = warmKeys(options.services);
  return {
    url: `http://${options.host}:${port}`,
    services: options.services,
    close: async () => {
      stopWarming();
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        // Idle keep-alive connections would hold close() open; requests in flight get 5 s.
        if ('closeIdleConnections' in server) server.closeIdleConnections();
        setTimeout(() => 'closeAllConnections' in server && server.closeAllConnections(), 5_000).unref();
      });
      // What was accepted is written before the pool closes.
      await options.services.sink.close?.();
    },
  };
}

/** How often a process reloads the live keys, so a key created meanwhile is known without a lookup. */
const KEY_WARM_INTERVAL_MS = 60_000;

/**
 * Keeps the live keys in the cache, from the start and then every minute: real keys never wait
 * for the unknown-key lookup budget (a restart included), which a flood of made-up keys spends.
 */
function warmKeys(services: Services): () => void {
  if (!services.keys.warm) return () => {};
  const warm = () => void services.keys.warm!().catch((error: unknown) => console.error('key warm-up failed:', error));
  warm();
  const timer = setInterval(warm, KEY_WARM_INTERVAL_MS);
  timer.unref();
  return () => clearInterval(timer);
}
