-- The live keys, for a Node process to know them from its start: a key it knows never waits for
-- the unknown-key lookup budget, so that budget can be small enough that a flood of made-up keys
-- cannot crowd the database, without a restart making real keys wait.
create function public.live_api_keys(p_limit integer)
returns table (id uuid, org_id uuid, kind text, scopes text[], key_hash text, properties jsonb)
language sql
stable
set search_path = ''
as $$
  select k.id, k.org_id, k.kind, k.scopes, k.key_hash, k.properties
  from public.api_keys k
  where k.revoked_at is null
    and (k.expires_at is null or k.expires_at > now())
  order by k.created_at desc
  limit greatest(p_limit, 0)
$$;
revoke all on function public.live_api_keys(integer) from public, anon, authenticated;
grant execute on function public.live_api_keys(integer) to service_role;
