import { serve, type ServerType } from '@hono/node-server';
import type { Database } from '../core/db/port.ts';
import { createApp } from './app.ts';

/** The Node entry: the same Hono app, served by @hono/node-server on one shared pool. */
export interface HttpServer {
  url: string;
  close(): Promise<void>;
}

export async function startHttpServer(options: { db: Database; port: number; host: string }): Promise<HttpServer> {
  const app = createApp({ database: () => options.db });
  const server = await new Promise<ServerType>((resolve, reject) => {
    const s = serve({ fetch: app.fetch, port: options.port, hostname: options.host }, () => resolve(s));
    s.once('error', reject);
  });
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : options.port;
  return {
    url: `http://${options.host}:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        // Keep-alive connections would hold close() open; end them.
        if ('closeAllConnections' in server) server.closeAllConnections();
      }),
  };
}
