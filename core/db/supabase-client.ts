import { createClient, type SupabaseClient } from '@supabase/supabase-js';

/** A supabase-js client with the service-role key, for the rpc adapters (see supabase.ts); no session of its own. */
export function supabaseServiceClient(url: string, serviceRoleKey: string): SupabaseClient {
  return createClient(url, serviceRoleKey, {
    auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
  });
}
