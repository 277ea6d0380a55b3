import { createServer, type Server } from 'node:http';
import type { Database } from '../../core/db/port.ts';

/**
 * STAND-IN for Supabase's PostgREST (a remote service that cannot run here). It serves only
 * what supabase-js `rpc()` calls: POST /rest/v1/rpc/<function> with named JSON arguments. Like
 * PostgREST it checks the bearer key, switches to the key's role (service_role) for the call, so
 * the functions' grants are really exercised, and answers a set-returning function with an array
 * of rows and a scalar one with its value. The SQL it runs is the project's own.
 */
export interface PostgrestStandIn {
  url: string;
  calls: string[];
  close(): Promise<void>;
}

export async function startPostgrestStandIn(db: Database, serviceRoleKey: string): Promise<PostgrestStandIn> {
  const calls: string[] = [];
  const server: Server = createServer(async (request, response) => {
    const send = (status: number, body: unknown) => {
      response.writeHead(status, { 'content-type': 'application/json' });
      response.end(JSON.stringify(body));
    };
    const match = /^\/rest\/v1\/rpc\/([a-z_][a-z0-9_]*)$/.exec(request.url ?? '');
    if (request.method !== 'POST' || !match) return send(404, { code: 'PGRST202', message: 'not found' });
    if (request.headers.authorization !== `Bearer ${serviceRoleKey}` || request.headers.apikey !== serviceRoleKey) {
      return send(401, { code: 'PGRST301', message: 'JWT invalid' });
    }
    const chunks: Buffer[] = [];
    for await (const chunk of request) chunks.push(chunk as Buffer);
    const args = JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}') as Record<string, unknown>;
    const fn = match[1]!;
    calls.push(fn);
    try {
      const result = await db.transaction(async (tx) => {
        const { rows: meta } = await tx.query<{ retset: boolean }>(
          `select p.proretset as retset from pg_proc p join pg_namespace n on n.oid = p.pronamespace
           where n.nspname = 'public' and p.proname = $1`,
          [fn],
        );
        if (meta.length === 0) return { status: 404, body: { code: 'PGRST202', message: `function public.${fn} not found` } };
        await tx.query('set local role service_role');
        await tx.query(`select set_config('request.jwt.claims', '{"role":"service_role"}', true)`);
        const names = Object.keys(args);
        const call = `public.${fn}(${names.map((name, i) => `${name} => $${i + 1}`).join(', ')})`;
        // as PostgREST: JSON arrays become SQL arrays, objects json, null NULL
        const values = names.map((name) => {
          const value = args[name];
          return value === null || Array.isArray(value) || typeof value !== 'object' ? value : JSON.stringify(value);
        });
        if (meta[0]!.retset) return { status: 200, body: (await tx.query(`select * from ${call}`, values)).rows };
        return { status: 200, body: (await tx.query<{ v: unknown }>(`select ${call} as v`, values)).rows[0]!.v };
      });
      send(result.status, result.body);
    } catch (error) {
      send(400, { code: (error as { code?: string }).code ?? 'XX000', message: (error as Error).message });
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address() as { port: number };
  return {
    url: `http://127.0.0.1:${address.port}`,
    calls,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}
