-- Audit trail: who changed what, before and after, for every entity table. events and
-- metrics are logs themselves and are not audited row by row.

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

do $$
declare
  v_table text;
begin
  foreach v_table in array array[
    'organizations', 'users', 'org_members', 'data_assets', 'campaigns', 'relationships',
    'transactions', 'permissions', 'api_keys'
  ] loop
    execute format(
      'create trigger audit_row_change after insert or update or delete on public.%I
         for each row execute function private.audit_row_change()', v_table);
  end loop;
end
$$;

-- Owners and admins read their org's trail; nobody edits it through the API.
alter table public.audit_log enable row level security;
create policy "audit_log: admins read" on public.audit_log
  for select to authenticated
  using (org_id in (select private.user_org_ids_with_role(array['owner', 'admin'])));

revoke all on table public.audit_log from anon, authenticated;
grant select on table public.audit_log to authenticated;
grant select, insert on table public.audit_log to service_role;
