-- The entities: data assets, campaigns, polymorphic relationships, transactions and permissions
-- (with the grants in force now). Types and settings that vary by business live in properties
-- (no migration for a new asset type, campaign setting, relationship type or permission
-- condition).

-- Tiers in ascending order; a tier_required condition is met by that tier or a higher one.
-- Unknown tiers must match exactly.
create function private.tier_satisfies(p_tier text, p_required text) returns boolean
language sql
immutable
set search_path = ''
as $$
  select case
    when p_required is null then true
    when p_tier is null then false
    when array_position(array['free', 'starter', 'pro', 'business', 'enterprise'], p_required) is null
      or array_position(array['free', 'starter', 'pro', 'business', 'enterprise'], p_tier) is null
      then p_tier = p_required
    else array_position(array['free', 'starter', 'pro', 'business', 'enterprise'], p_tier)
      >= array_position(array['free', 'starter', 'pro', 'business', 'enterprise'], p_required)
  end
$$;

-- The subscription tier of an organization, read as the caller through its policies: a member
-- gets its own orgs' tiers, the backend (service_role) any, anyone else nothing. So
-- permissions_in_force evaluates a tier condition for the licensee (a member of the grantee org,
-- or of the granting org for a role grant); the granting org does not see another org's tier,
-- and for it a grant to another org that requires a tier is not listed as in force (it is still
-- in permissions).
create function private.org_subscription_tier(p_org uuid) returns text
language sql
stable
security invoker
set search_path = ''
as $$
  select o.properties ->> 'subscription_tier' from public.organizations o where o.id = p_org
$$;
revoke all on function private.tier_satisfies(text, text) from public;
revoke all on function private.org_subscription_tier(uuid) from public;
grant execute on function private.tier_satisfies(text, text) to authenticated, service_role;
grant execute on function private.org_subscription_tier(uuid) to authenticated, service_role;

-- Conditions are written by people; keep them machine-readable so the view can rely on them.
create function private.valid_permission_conditions(p_conditions jsonb) returns boolean
language sql
immutable
set search_path = ''
as $$
  select
    (not (p_conditions ? 'valid_from') or (p_conditions ->> 'valid_from') ~
      '^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}(:?\d{2})?))?$')
    and (not (p_conditions ? 'valid_until') or (p_conditions ->> 'valid_until') ~
      '^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}(:?\d{2})?))?$')
    and (not (p_conditions ? 'usage_limit') or jsonb_typeof(p_conditions -> 'usage_limit') = 'number')
    and (not (p_conditions ? 'tier_required') or jsonb_typeof(p_conditions -> 'tier_required') = 'string')
$$;
revoke all on function private.valid_permission_conditions(jsonb) from public;
grant execute on function private.valid_permission_conditions(jsonb) to authenticated, service_role;

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
  check (grantee_type = 'role' or grantee_id is not null),
  constraint permissions_conditions_valid check (private.valid_permission_conditions(conditions))
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
create trigger audit_row_change after insert or update or delete on public.data_assets
  for each row execute function private.audit_row_change();
create trigger audit_row_change after insert or update or delete on public.campaigns
  for each row execute function private.audit_row_change();
create trigger audit_row_change after insert or update or delete on public.relationships
  for each row execute function private.audit_row_change();
create trigger audit_row_change after insert or update or delete on public.transactions
  for each row execute function private.audit_row_change();
create trigger audit_row_change after insert or update or delete on public.permissions
  for each row execute function private.audit_row_change();

-- data_assets: members read; owners, admins and editors write; owners and admins delete.
alter table public.data_assets enable row level security;
create policy "data_assets: members read" on public.data_assets
  for select to authenticated using (org_id in (select private.user_org_ids()));
create policy "data_assets: writers insert" on public.data_assets
  for insert to authenticated with check (org_id in (select private.user_org_ids_with_role(array['owner', 'admin', 'editor'])));
create policy "data_assets: writers update" on public.data_assets
  for update to authenticated
  using (org_id in (select private.user_org_ids_with_role(array['owner', 'admin', 'editor'])))
  with check (org_id in (select private.user_org_ids_with_role(array['owner', 'admin', 'editor'])));
create policy "data_assets: deleters delete" on public.data_assets
  for delete to authenticated using (org_id in (select private.user_org_ids_with_role(array['owner', 'admin'])));

-- campaigns: members read; owners, admins and editors write; owners and admins delete.
alter table public.campaigns enable row level security;
create policy "campaigns: members read" on public.campaigns
  for select to authenticated using (org_id in (select private.user_org_ids()));
create policy "campaigns: writers insert" on public.campaigns
  for insert to authenticated with check (org_id in (select private.user_org_ids_with_role(array['owner', 'admin', 'editor'])));
create policy "campaigns: writers update" on public.campaigns
  for update to authenticated
  using (org_id in (select private.user_org_ids_with_role(array['owner', 'admin', 'editor'])))
  with check (org_id in (select private.user_org_ids_with_role(array['owner', 'admin', 'editor'])));
create policy "campaigns: deleters delete" on public.campaigns
  for delete to authenticated using (org_id in (select private.user_org_ids_with_role(array['owner', 'admin'])));

-- relationships: members read; owners, admins and editors write and delete.
alter table public.relationships enable row level security;
create policy "relationships: members read" on public.relationships
  for select to authenticated using (org_id in (select private.user_org_ids()));
create policy "relationships: writers insert" on public.relationships
  for insert to authenticated with check (org_id in (select private.user_org_ids_with_role(array['owner', 'admin', 'editor'])));
create policy "relationships: writers update" on public.relationships
  for update to authenticated
  using (org_id in (select private.user_org_ids_with_role(array['owner', 'admin', 'editor'])))
  with check (org_id in (select private.user_org_ids_with_role(array['owner', 'admin', 'editor'])));
create policy "relationships: deleters delete" on public.relationships
  for delete to authenticated using (org_id in (select private.user_org_ids_with_role(array['owner', 'admin', 'editor'])));

-- transactions: members read; owners and admins write; only owners delete.
alter table public.transactions enable row level security;
create policy "transactions: members read" on public.transactions
  for select to authenticated using (org_id in (select private.user_org_ids()));
create policy "transactions: writers insert" on public.transactions
  for insert to authenticated with check (org_id in (select private.user_org_ids_with_role(array['owner', 'admin'])));
create policy "transactions: writers update" on public.transactions
  for update to authenticated
  using (org_id in (select private.user_org_ids_with_role(array['owner', 'admin'])))
  with check (org_id in (select private.user_org_ids_with_role(array['owner', 'admin'])));
create policy "transactions: deleters delete" on public.transactions
  for delete to authenticated using (org_id in (select private.user_org_ids_with_role(array['owner'])));

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

-- Grants in force now: not revoked, inside their validity window, tier satisfied.
-- usage_limit is exposed for the billing job, which counts usage from metrics.
create view public.permissions_in_force
with (security_invoker = true)
as
select
  p.id,
  p.org_id,
  p.grantee_type,
  p.grantee_id,
  p.grantee_role,
  p.resource_type,
  p.resource_id,
  p.action,
  (p.conditions ->> 'valid_from')::timestamptz as valid_from,
  (p.conditions ->> 'valid_until')::timestamptz as valid_until,
  (p.conditions ->> 'usage_limit')::numeric as usage_limit,
  p.conditions ->> 'tier_required' as tier_required,
  p.conditions,
  p.properties
from public.permissions p
where p.revoked_at is null
  and (not (p.conditions ? 'valid_from') or (p.conditions ->> 'valid_from')::timestamptz <= now())
  and (not (p.conditions ? 'valid_until') or (p.conditions ->> 'valid_until')::timestamptz > now())
  and (
    not (p.conditions ? 'tier_required')
    or private.tier_satisfies(
      private.org_subscription_tier(case p.grantee_type
        when 'organization' then p.grantee_id
        when 'role' then p.org_id
      end),
      p.conditions ->> 'tier_required')
  );

revoke all on table public.permissions_in_force from anon, authenticated;
grant select on table public.permissions_in_force to authenticated, service_role;

-- May this organization name this data asset: it owns it, or holds a licence in force (a
-- permission to `use` it, or every asset of its owner) from the owner.
create function private.may_use_asset(p_org uuid, p_asset uuid) returns boolean
language sql
stable
set search_path = ''
as $$
  select exists (
    select 1
    from public.data_assets a
    where a.id = p_asset
      and (a.org_id = p_org or exists (
        select 1 from public.permissions p
        where p.org_id = a.org_id and p.grantee_type = 'organization' and p.grantee_id = p_org
          and p.resource_type = 'data_asset' and (p.resource_id = a.id or p.resource_id is null)
          and p.action = 'use' and p.revoked_at is null
          and (not (p.conditions ? 'valid_from') or (p.conditions ->> 'valid_from')::timestamptz <= now())
          and (not (p.conditions ? 'valid_until') or (p.conditions ->> 'valid_until')::timestamptz > now()))))
$$;
revoke all on function private.may_use_asset(uuid, uuid) from public;
grant execute on function private.may_use_asset(uuid, uuid) to service_role;

-- Click redirects: the edge reads a campaign's settings (the click allow-list in
-- properties.click_allow_list) through this function, org-scoped, from Postgres or by rpc.
create function public.campaign_properties(p_org_id uuid, p_campaign_id uuid)
returns jsonb
language sql
stable
set search_path = ''
as $$
  select c.properties from public.campaigns c where c.org_id = p_org_id and c.id = p_campaign_id
$$;
revoke all on function public.campaign_properties(uuid, uuid) from public, anon, authenticated;
grant execute on function public.campaign_properties(uuid, uuid) to service_role;

-- Clicks are looked up by click_id (postbacks, attribution); events_click_idx serves it.
comment on function public.campaign_properties(uuid, uuid) is
  'A campaign''s properties for the edge (service_role only): click_allow_list, external ids.';
