import type { SupabaseClient } from '@supabase/supabase-js';
import { PreciseError } from '../errors.ts';

/**
 * The other way a store reaches the database: a SQL function called through supabase-js `rpc`
 * (PostgREST with the service-role key), for a Supabase deployment at the edge without a
 * database connection. The functions are the same as over SQL, so each store keeps its rpc
 * adapter beside its SQL one. Only a type is imported here: a Node process that never talks
 * rpc does not load supabase-js (the client is made in supabase-client.ts).
 */
export type { SupabaseClient };

export async function callRpc<T>(client: SupabaseClient, fn: string, args: Record<string, unknown>): Promise<T> {
  const { data, error } = await client.rpc(fn, args);
  if (error) {
    // The cause goes to the operator's log; the caller learns only that it may retry. PostgREST
    // passes the SQLSTATE on, so a refusal of the rows themselves can be isolated (isRowFault).
    console.error(`supabase rpc ${fn} failed: ${error.message}`);
    const unavailable = new PreciseError('unavailable', 'the event store is unavailable; retry shortly', { retry_after_seconds: 1 });
    throw Object.assign(unavailable, { sqlstate: error.code });
  }
  return data as T;
}

/** Health through the same path: a lookup of a hash no key has. */
export async function pingSupabase(client: SupabaseClient): Promise<void> {
  const { error } = await client.rpc('resolve_api_key', { p_key_hash: '0'.repeat(64) });
  if (error) throw new Error(error.message);
}
