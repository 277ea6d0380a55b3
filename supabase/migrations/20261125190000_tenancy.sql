-- Tenancy: organizations, user profiles, memberships with roles, API keys, the audit trail, and
-- the private helpers every row-level security policy in this project is written with.
--
-- This is the first file of the baseline (one file per concern, each object defined once in its
-- current form). From here on migrations are append-only: change an object in a new file.
--
-- Conventions for every table in this project:
--   * `properties jsonb not null default '{}'` holds anything a feature needs that is not a
--     key or a constraint (add to properties, not columns);
--   * `created_at` / `updated_at` are UTC timestamptz; updated_at is kept by a trigger;
--   * RLS is enabled, with one `create policy` per operation for `authenticated`, written with
--     `(select ...)` so Postgres evaluates the helper once per statement (an initPlan);
--   * anon gets nothing; service_role (the backend) bypasses RLS;
--   * functions run with `search_path = ''` and name every object with its schema, except the
--     few SQL functions the rollup's scans inline (a SET clause stops inlining); those name
--     only schema-qualified objects too.

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

-- ---------------------------------------------------------------------------------------------
-- The audit trail: who changed what, before and after, for every entity table (events and
-- metrics are logs themselves and are not audited row by row). Each audited table declares its
-- own `audit_row_change` trigger beside its definition.
-- ---------------------------------------------------------------------------------------------
create table public.audit_log (
  id bigint generated always as identity primary key,
  -- null only for rows that belong to no organization (a user's own profile)
  org_id uuid,
  table_name text not null,
  record_id text,
  action text not null check (action in ('INSERT', 'UPDATE', 'DELETE')),
  -- the Supabase user when the change came through the API, else null
  actor_id uuid,
  -- the API role (authenticated, service_role) or the database role; plus an optional label
  -- the backend sets per transaction (precise.actor, e.g. "cli")
  actor_role text not null,
  actor_label text,
  old_data jsonb,
  new_data jsonb,
  changed_at timestamptz not null default now()
);
create index audit_log_org_time_idx on public.audit_log (org_id, changed_at desc);
create index audit_log_record_idx on public.audit_log (table_name, record_id, changed_at desc);

-- Columns that must never be copied into the trail.
create function private.audit_redact(p_row jsonb) returns jsonb
language sql
immutable
set search_path = ''
as $$
  select p_row - array['key_hash', 'secret_hash', 'secret_ciphertext']
$$;

create function private.audit_row_change() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  v_old jsonb := case when tg_op in ('UPDATE', 'DELETE') then private.audit_redact(to_jsonb(old)) end;
  v_new jsonb := case when tg_op in ('INSERT', 'UPDATE') then private.audit_redact(to_jsonb(new)) end;
  v_row jsonb := coalesce(v_new, v_old);
  v_org text := case when tg_table_name = 'organizations' then v_row ->> 'id' else v_row ->> 'org_id' end;
begin
  -- An update that changed nothing but the timestamp is not worth a row.
  if tg_op = 'UPDATE' and (v_old - 'updated_at') = (v_new - 'updated_at') then
    return null;
  end if;

  insert into public.audit_log
    (org_id, table_name, record_id, action, actor_id, actor_role, actor_label, old_data, new_data)
  values (
    v_org::uuid,
    tg_table_name,
    coalesce(v_row ->> 'id', concat_ws(':', v_row ->> 'org_id', v_row ->> 'user_id')),
    tg_op,
    (select auth.uid()),
    coalesce(
      nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role',
      nullif(current_setting('role'), 'none'),
      session_user::text
    ),
    nullif(current_setting('precise.actor', true), ''),
    v_old,
    v_new
  );
  return null;
end
$$;
revoke all on function private.audit_redact(jsonb) from public;
revoke all on function private.audit_row_change() from public;

create trigger audit_row_change after insert or update or delete on public.organizations
  for each row execute function private.audit_row_change();
create trigger audit_row_change after insert or update or delete on public.users
  for each row execute function private.audit_row_change();
create trigger audit_row_change after insert or update or delete on public.org_members
  for each row execute function private.audit_row_change();


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

-- org_members: members see the roster; owners and admins manage it. An admin manages members
-- but not owners: only an owner may make someone an owner, or change or remove an owner's row.
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
  using (
    org_id in (select private.user_org_ids_with_role(array['owner', 'admin']))
    and (role <> 'owner' or org_id in (select private.user_org_ids_with_role(array['owner'])))
  )
  with check (
    org_id in (select private.user_org_ids_with_role(array['owner', 'admin']))
    and (role <> 'owner' or org_id in (select private.user_org_ids_with_role(array['owner'])))
  );
create policy "org_members: admins delete" on public.org_members
  for delete to authenticated
  using (
    org_id in (select private.user_org_ids_with_role(array['owner', 'admin']))
    and (role <> 'owner' or org_id in (select private.user_org_ids_with_role(array['owner'])))
  );

-- An organization always keeps an owner, whoever asks (the backend and a deleted auth user's
-- cascade included): transfer ownership, or delete the organization, first. After the
-- statement's rows changed, so that it checks the state they leave (a statement that demotes
-- every owner at once fails too). SECURITY DEFINER: it must see and lock every owner row of
-- the org, whatever the caller's policies let it see.
create function private.keep_an_owner() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  if old.role <> 'owner'
     or (tg_op = 'UPDATE' and new.role = 'owner' and new.org_id = old.org_id) then
    return null;  -- no owner left the org
  end if;
  -- the organization itself is being deleted (this is its cascade)
  if not exists (select 1 from public.organizations o where o.id = old.org_id) then
    return null;
  end if;
  -- FOR SHARE: two owners demoting each other at once wait for one another (one of them fails,
  -- as a deadlock or a serialization failure, or sees the other's change) instead of both
  -- passing this check.
  perform 1 from public.org_members m where m.org_id = old.org_id and m.role = 'owner' for share;
  if not found then
    raise exception 'the last owner of organization % cannot be removed or demoted', old.org_id
      using errcode = 'check_violation',
            hint = 'make another member an owner first, or delete the organization';
  end if;
  return null;
end
$$;
revoke all on function private.keep_an_owner() from public;

create trigger keep_an_owner after update or delete on public.org_members
  for each row execute function private.keep_an_owner();

revoke all on table public.organizations, public.users, public.org_members from anon, authenticated;
grant select, update, delete on table public.organizations to authenticated;
grant select, insert, update on table public.users to authenticated;
grant select, insert, update, delete on table public.org_members to authenticated;
grant all on table public.organizations, public.users, public.org_members to service_role;

-- Owners and admins read their org's trail; nobody edits it through the API.
alter table public.audit_log enable row level security;
create policy "audit_log: admins read" on public.audit_log
  for select to authenticated
  using (org_id in (select private.user_org_ids_with_role(array['owner', 'admin'])));

revoke all on table public.audit_log from anon, authenticated;
grant select on table public.audit_log to authenticated;
grant select, insert on table public.audit_log to service_role;

-- ---------------------------------------------------------------------------------------------
-- API keys: pk_ publishable (safe in pages), sk_ secret with scopes, pb_ postback tokens.
-- ---------------------------------------------------------------------------------------------
-- A key is shown once at creation; only its SHA-256 is stored (keys are 192 random bits, so a
-- fast hash is the right one: nothing to brute-force, and a lookup by hash is one index probe).

create table public.api_keys (
  id uuid primary key default gen_random_uuid(),
  org_id uuid not null references public.organizations (id) on delete cascade,
  kind text not null check (kind in ('publishable', 'secret', 'postback')),
  name text check (length(name) <= 200),
  -- the first characters of the key, shown to humans to tell keys apart (e.g. "sk_3hT9q")
  prefix text not null check (length(prefix) between 4 and 16),
  -- hex SHA-256 of the whole key
  key_hash text not null unique check (key_hash ~ '^[0-9a-f]{64}$'),
  -- ingest, read, admin: only secret keys carry scopes; pk_ and pb_ may only ingest
  scopes text[] not null default '{}'
    check (scopes <@ array['ingest', 'read', 'admin']::text[]),
  properties jsonb not null default '{}' check (jsonb_typeof(properties) = 'object'),
  last_used_at timestamptz,
  expires_at timestamptz,
  revoked_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  check ((kind = 'secret') = (cardinality(scopes) > 0))
);
create index api_keys_org_idx on public.api_keys (org_id, kind);

create trigger touch_updated_at before update on public.api_keys
  for each row execute function private.touch_updated_at();
create trigger audit_row_change after insert or update or delete on public.api_keys
  for each row execute function private.audit_row_change();

-- Owners and admins see their org's keys (never the hash: column privileges below) and may
-- revoke them; keys are minted by the backend, which alone can show the clear key once.
alter table public.api_keys enable row level security;
create policy "api_keys: admins read" on public.api_keys
  for select to authenticated
  using (org_id in (select private.user_org_ids_with_role(array['owner', 'admin'])));
create policy "api_keys: admins update" on public.api_keys
  for update to authenticated
  using (org_id in (select private.user_org_ids_with_role(array['owner', 'admin'])))
  with check (org_id in (select private.user_org_ids_with_role(array['owner', 'admin'])));

revoke all on table public.api_keys from anon, authenticated;
grant select (id, org_id, kind, name, prefix, scopes, properties, last_used_at, expires_at,
  revoked_at, created_at, updated_at) on table public.api_keys to authenticated;
grant update (name, revoked_at, expires_at) on table public.api_keys to authenticated;
grant all on table public.api_keys to service_role;

-- The live key with this hash (not revoked, not expired), with its settings (a postback
-- token's param_map). A function so that the edge's supabase-js path (rpc) and the SQL path ask
-- the same question the same way.
create function public.resolve_api_key(p_key_hash text)
returns table (id uuid, org_id uuid, kind text, scopes text[], key_hash text, properties jsonb)
language sql
stable
set search_path = ''
as $$
  select k.id, k.org_id, k.kind, k.scopes, k.key_hash, k.properties
  from public.api_keys k
  where k.key_hash = p_key_hash
    and k.revoked_at is null
    and (k.expires_at is null or k.expires_at > now())
$$;
revoke all on function public.resolve_api_key(text) from public, anon, authenticated;
grant execute on function public.resolve_api_key(text) to service_role;

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
