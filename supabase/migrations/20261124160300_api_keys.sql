-- API keys: pk_ publishable (safe in pages), sk_ secret with scopes, pb_ postback tokens.
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
