-- Views for the common queries. security_invoker: the caller's RLS applies, so a view never
-- shows more than its tables would.

-- Counters per campaign, summed over the stored 15-minute grain of metrics (never over raw
-- events). Dimensions split a counter into disjoint parts, so their sum is the total.
-- Ratios are computed from the summed counters, never averaged.
create view public.campaign_summary
with (security_invoker = true)
as
with totals as (
  select
    m.org_id,
    m.entity_id as campaign_id,
    sum(m.value) filter (where m.metric = 'impressions') as impressions,
    sum(m.value) filter (where m.metric = 'clicks') as clicks,
    sum(m.value) filter (where m.metric = 'conversions') as conversions,
    sum(m.value) filter (where m.metric = 'spend') as spend,
    min(m.bucket_start) as first_bucket,
    max(m.bucket_start) as last_bucket
  from public.metrics m
  where m.entity_type = 'campaign' and m.granularity = '15m'
  group by m.org_id, m.entity_id
)
select
  c.org_id,
  c.id as campaign_id,
  c.name,
  c.status,
  c.starts_at,
  c.ends_at,
  (c.properties ->> 'budget')::numeric as budget,
  coalesce(t.impressions, 0) as impressions,
  coalesce(t.clicks, 0) as clicks,
  coalesce(t.conversions, 0) as conversions,
  coalesce(t.spend, 0) as spend,
  t.clicks / nullif(t.impressions, 0) as ctr,
  t.conversions / nullif(t.clicks, 0) as cvr,
  t.spend / nullif(t.conversions, 0) as cpa,
  t.spend / nullif((c.properties ->> 'budget')::numeric, 0) as budget_used,
  t.first_bucket,
  t.last_bucket
from public.campaigns c
left join totals t on t.org_id = c.org_id and t.campaign_id = c.id::text;

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

-- The subscription tier of a grantee organization. SECURITY DEFINER because the granting
-- org's members cannot read the grantee's organization row, yet must know whether a grant
-- holds; it answers only for the caller's own orgs and orgs the caller's orgs granted to.
create function private.org_subscription_tier(p_org uuid) returns text
language sql
stable
security definer
set search_path = ''
as $$
  select o.properties ->> 'subscription_tier'
  from public.organizations o
  where o.id = p_org
    and (
      (select auth.uid()) is null  -- the backend itself
      or o.id in (select private.user_org_ids())
      or exists (
        select 1 from public.permissions p
        where p.grantee_type = 'organization' and p.grantee_id = o.id
          and p.org_id in (select private.user_org_ids())
      )
    )
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

alter table public.permissions
  add constraint permissions_conditions_valid check (private.valid_permission_conditions(conditions));

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

revoke all on table public.campaign_summary, public.permissions_in_force from anon, authenticated;
grant select on table public.campaign_summary, public.permissions_in_force to authenticated, service_role;
