-- Tenancy: organizations, user profiles, memberships with roles, and the private helpers
-- every row-level security policy in this project is written with.
--
-- Conventions for every table in this project:
--   * `properties jsonb not null default '{}'` holds anything a feature needs that is not a
--     key or a constraint (the seed's extensibility rule: add to properties, not columns);
--   * `created_at` / `updated_at` are UTC timestamptz; updated_at is kept by a trigger;
--   * RLS is enabled, with one policy per operation for `authenticated`, written with
--     `(select ...)` so Postgres evaluates the helper once per statement (an initPlan);
--   * anon gets nothing; service_role (the backend) bypasses RLS.

create schema if not exists private;
revoke all on schema private from public;
grant usage on schema private to authenticated, service_role;

-- updated_at is derived, not trusted from the client.
create function private.touch_updated_at() returns trigger
language plpgsql
set search_path = ''
as $$
begin
  new.updated_at := now();
  return new;
end
$$;

create table public.organizations (
  id uuid primary key default gen_random_uuid(),
  name text not null check (length(btrim(name)) between 1 and 200),
  -- data_owner sells data assets, media_buyer runs campaigns; many are both.
  kind text not null default 'both' check (kind in ('data_owner', 'media_buyer', 'both')),
  properties jsonb not null default '{}' check (jsonb_typeof(properties) = 'object'),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
comment on table public.organizations is
  'Companies using Precise: data owners, media buyers or both. properties holds e.g. subscription_tier.';

-- The profile of a Supabase auth user (auth.users is owned by Supabase Auth).
create table public.users (
  id uuid primary key references auth.users (id) on delete cascade,
  email text,
  display_name text,
  properties jsonb not null default '{}' check (jsonb_typeof(properties) = 'object'),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);

create table public.org_members (
  org_id uuid not null references public.organizations (id) on delete cascade,
  user_id uuid not null references public.users (id) on delete cascade,
  -- owner: everything, including ownership; admin: members, keys, money; editor: campaigns,
  -- assets, relationships; viewer: read only.
  role text not null check (role in ('owner', 'admin', 'editor', 'viewer')),
  properties jsonb not null default '{}' check (jsonb_typeof(properties) = 'object'),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  primary key (org_id, user_id)
);
create index org_members_user_idx on public.org_members (user_id, org_id);

create trigger touch_updated_at before update on public.organizations
  for each row execute function private.touch_updated_at();
create trigger touch_updated_at before update on public.users
  for each row execute function private.touch_updated_at();
create trigger touch_updated_at before update on public.org_members
  for each row execute function private.touch_updated_at();

-- A new auth user gets a profile row, as Supabase projects usually do.
create function private.create_profile_for_auth_user() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  insert into public.users (id, email, display_name)
  values (
    new.id,
    new.email,
    coalesce(new.raw_user_meta_data ->> 'display_name', new.raw_user_meta_data ->> 'full_name')
  )
  on conflict (id) do nothing;
  return new;
end
$$;

create trigger create_profile_for_auth_user after insert on auth.users
  for each row execute function private.create_profile_for_auth_user();

-- Helpers for policies. SECURITY DEFINER so that a policy on org_members can read
-- org_members without recursing into its own policy; search_path = '' so nothing a caller
-- puts on their path can shadow a name.
create function private.user_org_ids() returns setof uuid
language sql
stable
security definer
set search_path = ''
as $$
  select m.org_id from public.org_members m where m.user_id = (select auth.uid())
$$;

create function private.user_org_ids_with_role(p_roles text[]) returns setof uuid
language sql
stable
security definer
set search_path = ''
as $$
  select m.org_id
  from public.org_members m
  where m.user_id = (select auth.uid()) and m.role = any (p_roles)
$$;

-- Users who share at least one organization with the caller (and the caller).
create function private.coworker_ids() returns setof uuid
language sql
stable
security definer
set search_path = ''
as $$
  select distinct other.user_id
  from public.org_members mine
  join public.org_members other on other.org_id = mine.org_id
  where mine.user_id = (select auth.uid())
$$;

revoke all on function private.touch_updated_at() from public;
revoke all on function private.create_profile_for_auth_user() from public;
revoke all on function private.user_org_ids() from public;
revoke all on function private.user_org_ids_with_role(text[]) from public;
revoke all on function private.coworker_ids() from public;
grant execute on function private.user_org_ids() to authenticated, service_role;
grant execute on function private.user_org_ids_with_role(text[]) to authenticated, service_role;
grant execute on function private.coworker_ids() to authenticated, service_role;

-- The standard policy set of a tenant table (a table with org_id): members read, writer roles
-- insert and update, deleter roles delete. Used by this and later migrations so that every
-- tenant table gets the same, reviewed rules; each operation is its own policy.
create function private.create_tenant_policies(
  p_table regclass,
  p_writer_roles text[],
  p_deleter_roles text[]
) returns void
language plpgsql
set search_path = ''
as $$
declare
  v_name text := (select c.relname from pg_catalog.pg_class c where c.oid = p_table);
  v_writers text := format('(org_id in (select private.user_org_ids_with_role(%L::text[])))', p_writer_roles);
  v_deleters text := format('(org_id in (select private.user_org_ids_with_role(%L::text[])))', p_deleter_roles);
begin
  execute format('alter table %s enable row level security', p_table);
  execute format(
    'create policy %I on %s for select to authenticated using (org_id in (select private.user_org_ids()))',
    v_name || ': members read', p_table);
  execute format('create policy %I on %s for insert to authenticated with check %s',
    v_name || ': writers insert', p_table, v_writers);
  execute format('create policy %I on %s for update to authenticated using %s with check %s',
    v_name || ': writers update', p_table, v_writers, v_writers);
  execute format('create policy %I on %s for delete to authenticated using %s',
    v_name || ': deleters delete', p_table, v_deleters);
end
$$;
revoke all on function private.create_tenant_policies(regclass, text[], text[]) from public;

-- organizations: members read; owners and admins update; only owners delete. New
-- organizations are created by the backend (service_role, the CLI).
alter table public.organizations enable row level security;
create policy "organizations: members read" on public.organizations
  for select to authenticated using (id in (select private.user_org_ids()));
create policy "organizations: admins update" on public.organizations
  for update to authenticated
  using (id in (select private.user_org_ids_with_role(array['owner', 'admin'])))
  with check (id in (select private.user_org_ids_with_role(array['owner', 'admin'])));
create policy "organizations: owners delete" on public.organizations
  for delete to authenticated using (id in (select private.user_org_ids_with_role(array['owner'])));

-- users: you and your coworkers are visible; you edit only yourself.
alter table public.users enable row level security;
create policy "users: coworkers read" on public.users
  for select to authenticated using (id in (select private.coworker_ids()) or id = (select auth.uid()));
create policy "users: self insert" on public.users
  for insert to authenticated with check (id = (select auth.uid()));
create policy "users: self update" on public.users
  for update to authenticated using (id = (select auth.uid())) with check (id = (select auth.uid()));

-- org_members: members see the roster; owners and admins manage it, and only an owner may
-- make someone an owner.
alter table public.org_members enable row level security;
create policy "org_members: members read" on public.org_members
  for select to authenticated using (org_id in (select private.user_org_ids()));
create policy "org_members: admins insert" on public.org_members
  for insert to authenticated with check (
    org_id in (select private.user_org_ids_with_role(array['owner', 'admin']))
    and (role <> 'owner' or org_id in (select private.user_org_ids_with_role(array['owner'])))
  );
create policy "org_members: admins update" on public.org_members
  for update to authenticated
  using (org_id in (select private.user_org_ids_with_role(array['owner', 'admin'])))
  with check (
    org_id in (select private.user_org_ids_with_role(array['owner', 'admin']))
    and (role <> 'owner' or org_id in (select private.user_org_ids_with_role(array['owner'])))
  );
create policy "org_members: admins delete" on public.org_members
  for delete to authenticated
  using (org_id in (select private.user_org_ids_with_role(array['owner', 'admin'])));

revoke all on table public.organizations, public.users, public.org_members from anon, authenticated;
grant select, update, delete on table public.organizations to authenticated;
grant select, insert, update on table public.users to authenticated;
grant select, insert, update, delete on table public.org_members to authenticated;
grant all on table public.organizations, public.users, public.org_members to service_role;
