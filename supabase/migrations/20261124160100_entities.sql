-- The seed's entities: data assets, campaigns, polymorphic relationships, transactions and
-- permissions. Types and settings that vary by business live in properties (no migration
-- for a new asset type, campaign setting, relationship type or permission condition).

create table public.data_assets (
  id uuid primary key default gen_random_uuid(),
  org_id uuid not null references public.organizations (id) on delete cascade,
  name text not null check (length(btrim(name)) between 1 and 200),
  -- audience, behavioral, location, contextual, ... : open vocabulary, snake_case.
  asset_type text not null check (asset_type ~ '^[a-z][a-z0-9_]{0,62}$'),
  status text not null default 'active' check (status in ('draft', 'active', 'paused', 'archived')),
  -- e.g. {"size": 1000000, "quality_score": 95, "categories": [...], "refresh_frequency": "daily"}
  properties jsonb not null default '{}' check (jsonb_typeof(properties) = 'object'),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
create index data_assets_org_idx on public.data_assets (org_id, asset_type);

create table public.campaigns (
  id uuid primary key default gen_random_uuid(),
  org_id uuid not null references public.organizations (id) on delete cascade,
  name text not null check (length(btrim(name)) between 1 and 200),
  status text not null default 'draft'
    check (status in ('draft', 'active', 'paused', 'completed', 'archived')),
  starts_at timestamptz,
  ends_at timestamptz,
  -- e.g. {"budget": 50000, "targeting": {...}, "creatives": [...], "dsp_settings": {...},
  --       "creative_fatigue_threshold": 2000000}
  properties jsonb not null default '{}' check (jsonb_typeof(properties) = 'object'),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  check (ends_at is null or starts_at is null or ends_at > starts_at)
);
create index campaigns_org_idx on public.campaigns (org_id, status);

-- Polymorphic many-to-many: campaign_uses_asset, user_manages_campaign,
-- asset_requires_permission, and any type a feature needs later.
create table public.relationships (
  id uuid primary key default gen_random_uuid(),
  org_id uuid not null references public.organizations (id) on delete cascade,
  relationship_type text not null check (relationship_type ~ '^[a-z][a-z0-9_]{0,62}$'),
  source_type text not null check (source_type ~ '^[a-z][a-z0-9_]{0,62}$'),
  source_id uuid not null,
  target_type text not null check (target_type ~ '^[a-z][a-z0-9_]{0,62}$'),
  target_id uuid not null,
  properties jsonb not null default '{}' check (jsonb_typeof(properties) = 'object'),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  unique (org_id, relationship_type, source_type, source_id, target_type, target_id)
);
create index relationships_target_idx on public.relationships (org_id, target_type, target_id, relationship_type);

-- Money: one row per financial record; line items live in properties.line_items.
create table public.transactions (
  id uuid primary key default gen_random_uuid(),
  org_id uuid not null references public.organizations (id) on delete cascade,
  -- the other party, when it is an organization on Precise (a data owner paid by a buyer)
  counterparty_org_id uuid references public.organizations (id) on delete set null,
  transaction_type text not null check (transaction_type ~ '^[a-z][a-z0-9_]{0,62}$'),
  status text not null default 'pending'
    check (status in ('pending', 'completed', 'failed', 'refunded', 'void')),
  amount numeric(20, 6) not null,
  currency text not null check (currency ~ '^[A-Z]{3}$'),
  occurred_at timestamptz not null default now(),
  properties jsonb not null default '{}' check (jsonb_typeof(properties) = 'object'),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
create index transactions_org_time_idx on public.transactions (org_id, occurred_at);

-- Grants from a resource owner (org_id) to a grantee: an organization, a user, or every
-- member of the granting org holding a role. conditions holds e.g.
-- {"valid_from": "...", "valid_until": "...", "usage_limit": 1000000, "tier_required": "enterprise"}.
create table public.permissions (
  id uuid primary key default gen_random_uuid(),
  org_id uuid not null references public.organizations (id) on delete cascade,
  grantee_type text not null check (grantee_type in ('organization', 'user', 'role')),
  grantee_id uuid,
  grantee_role text check (grantee_role in ('owner', 'admin', 'editor', 'viewer')),
  resource_type text not null check (resource_type ~ '^[a-z][a-z0-9_]{0,62}$'),
  -- null: every resource of that type owned by org_id
  resource_id uuid,
  action text not null check (action ~ '^[a-z][a-z0-9_]{0,62}$'),
  conditions jsonb not null default '{}' check (jsonb_typeof(conditions) = 'object'),
  properties jsonb not null default '{}' check (jsonb_typeof(properties) = 'object'),
  revoked_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  check ((grantee_type = 'role') = (grantee_role is not null and grantee_id is null)),
  check (grantee_type = 'role' or grantee_id is not null)
);
create index permissions_org_resource_idx on public.permissions (org_id, resource_type, resource_id);
create index permissions_grantee_idx on public.permissions (grantee_type, grantee_id);

create trigger touch_updated_at before update on public.data_assets
  for each row execute function private.touch_updated_at();
create trigger touch_updated_at before update on public.campaigns
  for each row execute function private.touch_updated_at();
create trigger touch_updated_at before update on public.relationships
  for each row execute function private.touch_updated_at();
create trigger touch_updated_at before update on public.transactions
  for each row execute function private.touch_updated_at();
create trigger touch_updated_at before update on public.permissions
  for each row execute function private.touch_updated_at();

select private.create_tenant_policies('public.data_assets', array['owner', 'admin', 'editor'], array['owner', 'admin']);
select private.create_tenant_policies('public.campaigns', array['owner', 'admin', 'editor'], array['owner', 'admin']);
select private.create_tenant_policies('public.relationships', array['owner', 'admin', 'editor'], array['owner', 'admin', 'editor']);
select private.create_tenant_policies('public.transactions', array['owner', 'admin'], array['owner']);

-- permissions: the granting org's admins manage them; the grantee (its members, or the user)
-- can also read what it has been granted.
alter table public.permissions enable row level security;
create policy "permissions: members and grantees read" on public.permissions
  for select to authenticated using (
    org_id in (select private.user_org_ids())
    or (grantee_type = 'organization' and grantee_id in (select private.user_org_ids()))
    or (grantee_type = 'user' and grantee_id = (select auth.uid()))
  );
create policy "permissions: admins insert" on public.permissions
  for insert to authenticated
  with check (org_id in (select private.user_org_ids_with_role(array['owner', 'admin'])));
create policy "permissions: admins update" on public.permissions
  for update to authenticated
  using (org_id in (select private.user_org_ids_with_role(array['owner', 'admin'])))
  with check (org_id in (select private.user_org_ids_with_role(array['owner', 'admin'])));
create policy "permissions: admins delete" on public.permissions
  for delete to authenticated
  using (org_id in (select private.user_org_ids_with_role(array['owner', 'admin'])));

revoke all on table public.data_assets, public.campaigns, public.relationships,
  public.transactions, public.permissions from anon, authenticated;
grant select, insert, update, delete on table public.data_assets, public.campaigns,
  public.relationships, public.transactions, public.permissions to authenticated;
grant all on table public.data_assets, public.campaigns, public.relationships,
  public.transactions, public.permissions to service_role;
