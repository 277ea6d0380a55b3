-- Supabase compatibility bootstrap for a stock Postgres or PGlite.
--
-- The migrations in supabase/migrations are written for Supabase and must apply there
-- unchanged. Supabase already has the roles anon, authenticated and service_role, the auth
-- schema with auth.users, and auth.uid()/auth.role()/auth.jwt(). Elsewhere we create exactly
-- those, and only where missing, so that on Supabase this script changes nothing.
-- auth.* reads request.jwt.claims the way Supabase (PostgREST) sets it per request.

do $bootstrap$
declare
  r record;
begin
  for r in
    select * from (values
      ('anon', false),
      ('authenticated', false),
      ('service_role', true)
    ) as roles(name, bypass_rls)
  loop
    if not exists (select 1 from pg_catalog.pg_roles where rolname = r.name) then
      begin
        execute format('create role %I nologin noinherit%s', r.name,
                       case when r.bypass_rls then ' bypassrls' else '' end);
      exception
        -- Roles are cluster-wide: another database being bootstrapped at the same moment
        -- may have created it first.
        when duplicate_object or unique_violation then null;
      end;
    end if;
  end loop;
end
$bootstrap$;

create schema if not exists auth;
grant usage on schema auth to anon, authenticated, service_role;

create table if not exists auth.users (
  id uuid primary key default gen_random_uuid(),
  email text unique,
  raw_user_meta_data jsonb not null default '{}',
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);

do $functions$
begin
  if to_regprocedure('auth.jwt()') is null then
    create function auth.jwt() returns jsonb
    language sql stable
    as $fn$
      select coalesce(
        nullif(current_setting('request.jwt.claim', true), ''),
        nullif(current_setting('request.jwt.claims', true), '')
      )::jsonb
    $fn$;
  end if;

  if to_regprocedure('auth.uid()') is null then
    create function auth.uid() returns uuid
    language sql stable
    as $fn$
      select coalesce(
        nullif(current_setting('request.jwt.claim.sub', true), ''),
        (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
      )::uuid
    $fn$;
  end if;

  if to_regprocedure('auth.role()') is null then
    create function auth.role() returns text
    language sql stable
    as $fn$
      select coalesce(
        nullif(current_setting('request.jwt.claim.role', true), ''),
        (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role')
      )::text
    $fn$;
  end if;
end
$functions$;

grant execute on function auth.uid(), auth.role(), auth.jwt() to anon, authenticated, service_role;
grant usage on schema public to anon, authenticated, service_role;
