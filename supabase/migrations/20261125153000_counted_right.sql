-- Counted right: what an event counts for is decided once, as it is stored.
--   * Which event types are conversions: `conversion` and the usual postback events, or the
--     organization's own list (organizations.properties.conversion_types), recorded on the event.
--   * An event that names a click we recorded (a postback's conversion) inherits the click's
--     campaign, creative, data assets and user key, so campaign metrics and attribution see it.
--   * A campaign or data asset the organization neither owns nor is licensed to use is kept in
--     context.unowned and never counted under that id.
--   * A row Postgres refuses is isolated by halving the batch (a few subtransactions, never one
--     per row), so it costs its neighbours nothing.

-- ---------------------------------------------------------------------------------------------
-- Which events are conversions
-- ---------------------------------------------------------------------------------------------

-- The types an organization counts as conversions: its properties.conversion_types (an array
-- of snake_case names), else the default list.
create function private.conversion_types(p_org_properties jsonb) returns text[]
language sql
immutable
set search_path = ''
as $$
  select case
    when jsonb_typeof(p_org_properties -> 'conversion_types') = 'array'
      then array(select jsonb_array_elements_text(p_org_properties -> 'conversion_types'))
    else array['conversion', 'install', 'lead', 'purchase', 'sign_up', 'subscribe', 'registration', 'deposit']
  end
$$;
revoke all on function private.conversion_types(jsonb) from public;
grant execute on function private.conversion_types(jsonb) to service_role;

-- The one rule every job uses: an event is a conversion when ingestion marked it so
-- (context.conversion, written only where it differs from the type alone), else when its type is
-- `conversion` (events stored before the mark existed). No search_path setting: it names no
-- object, and without one the planner inlines it into the rollup's scans.
create function private.counts_as_conversion(p_type text, p_context jsonb) returns boolean
language sql
immutable
parallel safe
as $$
  select coalesce((p_context ->> 'conversion')::boolean, p_type = 'conversion')
$$;
revoke all on function private.counts_as_conversion(text, jsonb) from public;
grant execute on function private.counts_as_conversion(text, jsonb) to service_role;

-- ---------------------------------------------------------------------------------------------
-- The insert: dedup, the conversion mark, what a click passes on, unowned ids set apart
-- ---------------------------------------------------------------------------------------------

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

create or replace function private.insert_events(p_events jsonb)
returns table (org_id uuid, event_id text)
language sql
set search_path = ''
as $$
  with input as (
    select distinct on (e.org_id, e.event_id) e.*
    from jsonb_to_recordset(p_events) as e(
      org_id uuid, event_id text, id_source text, type text, occurred_at timestamptz,
      received_at timestamptz, campaign_id uuid, creative_id text, asset_ids uuid[],
      user_key text, click_id text, value numeric, currency text, status text,
      properties jsonb, context jsonb)
    -- one row per key even when a caller sends a key twice (with different times, the
    -- partitioned primary key alone would keep both)
    order by e.org_id, e.event_id, e.received_at
  ),
  -- what a non-click event naming a recorded click takes from it (the first such click)
  inherited as (
    select i.*,
           coalesce(i.campaign_id, c.campaign_id) as from_campaign_id,
           coalesce(i.creative_id, c.creative_id) as from_creative_id,
           case when coalesce(cardinality(i.asset_ids), 0) = 0 then c.asset_ids else i.asset_ids end as from_asset_ids,
           -- the user the click names, unless the event names its own or may carry none
           case when coalesce((i.context -> 'consent' ->> 'limited')::boolean, false) or i.context ? 'anonymous'
                then i.user_key else coalesce(i.user_key, c.user_key) end as from_user_key,
           c.event_id as click_event_id
    from input i
    left join lateral (
      select k.event_id, k.campaign_id, k.creative_id, k.asset_ids, k.user_key
      from public.events k
      where i.click_id is not null and i.type <> 'click'
        and k.org_id = i.org_id and k.click_id = i.click_id and k.type = 'click'
      order by k.occurred_at, k.event_id
      limit 1
    ) c on true
  ),
  campaign_checks as (
    select d.org_id, d.campaign_id,
           exists (select 1 from public.campaigns c where c.id = d.campaign_id and c.org_id = d.org_id) as allowed
    from (select distinct h.org_id, h.from_campaign_id as campaign_id from inherited h where h.from_campaign_id is not null) d
  ),
  asset_checks as (
    select d.org_id, d.asset_id, private.may_use_asset(d.org_id, d.asset_id) as allowed
    from (select distinct h.org_id, a.asset_id from inherited h cross join unnest(h.from_asset_ids) as a(asset_id)) d
  ),
  conversion_types as (
    select o.id as org_id, private.conversion_types(o.properties) as types
    from public.organizations o
    where o.id in (select distinct i.org_id from input i)
  ),
  resolved as (
    select h.*,
           case when coalesce(cc.allowed, true) then h.from_campaign_id end as final_campaign_id,
           cc.allowed = false as campaign_unowned,
           coalesce(assets.allowed, '{}') as final_asset_ids,
           assets.unowned as unowned_asset_ids,
           h.type = any (coalesce(t.types, private.conversion_types('{}'))) as is_conversion
    from inherited h
    left join campaign_checks cc on cc.org_id = h.org_id and cc.campaign_id = h.from_campaign_id
    left join conversion_types t on t.org_id = h.org_id
    -- the event's assets split in one pass, in the order it named them
    cross join lateral (
      select array_agg(a.asset_id order by a.ord) filter (where x.allowed) as allowed,
             array_agg(a.asset_id order by a.ord) filter (where not x.allowed) as unowned
      from unnest(h.from_asset_ids) with ordinality as a(asset_id, ord)
      join asset_checks x on x.org_id = h.org_id and x.asset_id = a.asset_id
    ) assets
  ),
  claimed as (
    insert into public.event_ids (org_id, event_id, occurred_at)
    select i.org_id, i.event_id, i.occurred_at from input i where i.id_source = 'client'
    on conflict do nothing
    returning event_ids.org_id, event_ids.event_id
  )
  insert into public.events as ev (
    org_id, event_id, type, occurred_at, received_at, campaign_id, creative_id, asset_ids,
    user_key, click_id, value, currency, status, properties, context)
  select
    r.org_id, r.event_id, r.type, r.occurred_at, coalesce(r.received_at, now()), r.final_campaign_id,
    r.from_creative_id, r.final_asset_ids, r.from_user_key, r.click_id, r.value, r.currency,
    r.status, coalesce(r.properties, '{}'),
    coalesce(r.context, '{}') || jsonb_strip_nulls(jsonb_build_object(
      -- written only where the type alone would say otherwise (private.counts_as_conversion)
      'conversion', case when r.is_conversion <> (r.type = 'conversion') then r.is_conversion end,
      'click_event_id', r.click_event_id,
      'unowned', nullif(jsonb_strip_nulls(jsonb_build_object(
        'campaign_id', case when r.campaign_unowned then r.from_campaign_id end,
        'asset_ids', to_jsonb(r.unowned_asset_ids))), '{}'::jsonb)))
  from resolved r
  where r.id_source is distinct from 'client'
     or exists (select 1 from claimed c where c.org_id = r.org_id and c.event_id = r.event_id)
  on conflict do nothing
  returning ev.org_id, ev.event_id
$$;

-- Inserts p_events; a row Postgres refuses is found by halving (about 2·log2(n) subtransactions
-- per bad row, where one per row overflowed the snapshot's subtransaction cache past 64).
-- Returns { "inserted": ["org_id event_id", ...], "failed": [[org_id, event_id, reason, sqlstate, row], ...] }.
create function private.insert_events_isolating(p_events jsonb) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_count integer := jsonb_array_length(p_events);
  v_half integer;
  v_left jsonb;
  v_right jsonb;
begin
  if v_count = 0 then
    return jsonb_build_object('inserted', '[]'::jsonb, 'failed', '[]'::jsonb);
  end if;
  begin
    return jsonb_build_object(
      'inserted', (select coalesce(jsonb_agg(k.org_id::text || ' ' || k.event_id), '[]') from private.insert_events(p_events) k),
      'failed', '[]'::jsonb);
  -- Only a problem of a row itself (bad data, a constraint) is the row's fault; anything else
  -- (permissions, a lost connection) fails the whole call so the sender retries.
  exception when data_exception or integrity_constraint_violation then
    if v_count = 1 then
      return jsonb_build_object('inserted', '[]'::jsonb, 'failed', jsonb_build_array(jsonb_build_array(
        p_events -> 0 ->> 'org_id', p_events -> 0 ->> 'event_id', sqlerrm, sqlstate, p_events -> 0)));
    end if;
  end;
  v_half := v_count / 2;
  select coalesce(jsonb_agg(e.value order by e.ordinality) filter (where e.ordinality <= v_half), '[]'),
         coalesce(jsonb_agg(e.value order by e.ordinality) filter (where e.ordinality > v_half), '[]')
    into v_left, v_right
    from jsonb_array_elements(p_events) with ordinality as e;
  v_left := private.insert_events_isolating(v_left);
  v_right := private.insert_events_isolating(v_right);
  return jsonb_build_object('inserted', (v_left -> 'inserted') || (v_right -> 'inserted'),
                            'failed', (v_left -> 'failed') || (v_right -> 'failed'));
end
$$;
revoke all on function private.insert_events_isolating(jsonb) from public;
grant execute on function private.insert_events_isolating(jsonb) to service_role;

create or replace function public.ingest_events(p_batch jsonb)
returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_events jsonb := coalesce(p_batch -> 'events', '[]');
  v_result jsonb;
  v_inserted text[];
  v_failed text[];
  v_failures_stored integer;
begin
  if jsonb_typeof(v_events) <> 'array' then
    raise exception 'ingest_events: "events" must be an array' using errcode = 'invalid_parameter_value';
  end if;

  v_result := private.insert_events_isolating(v_events);
  -- keys as 'org_id event_id' text, so the set difference below is a hash lookup
  v_inserted := array(select jsonb_array_elements_text(v_result -> 'inserted'));
  v_failed := array(select (f ->> 0) || ' ' || (f ->> 1) from jsonb_array_elements(v_result -> 'failed') f);

  insert into public.failed_events (org_id, source, reason_code, reason, payload, payload_truncated, properties)
  select (f ->> 0)::uuid,
         coalesce(f -> 4 -> 'context' ->> 'source', 'ingest'),
         'db_rejected',
         f ->> 2,
         left((f -> 4)::text, 65536),
         length((f -> 4)::text) > 65536,
         jsonb_build_object('payload_format', 'canonical', 'sqlstate', f ->> 3)
  from jsonb_array_elements(v_result -> 'failed') f;

  insert into public.failed_events (org_id, source, reason_code, reason, field, payload, payload_truncated, properties, received_at)
  select f.org_id, f.source, f.reason_code, f.reason, f.field, f.payload, coalesce(f.payload_truncated, false),
         coalesce(f.properties, '{}'), coalesce(f.received_at, now())
  from jsonb_to_recordset(coalesce(p_batch -> 'failures', '[]')) as f(
    org_id uuid, source text, reason_code text, reason text, field text, payload text,
    payload_truncated boolean, properties jsonb, received_at timestamptz);
  get diagnostics v_failures_stored = row_count;

  return jsonb_build_object(
    'inserted', cardinality(v_inserted),
    -- the common case, everything new, skips the set difference
    'duplicates', case when cardinality(v_inserted) + cardinality(v_failed) = jsonb_array_length(v_events) then '[]'::jsonb else (
      select coalesce(jsonb_agg(jsonb_build_array(e ->> 'org_id', e ->> 'event_id')), '[]')
      from jsonb_array_elements(v_events) e
      where (e ->> 'org_id') || ' ' || (e ->> 'event_id') not in (select unnest(v_inserted || v_failed))
    ) end,
    'failed', (select coalesce(jsonb_agg(jsonb_build_array(f -> 0, f -> 1, f -> 2)), '[]') from jsonb_array_elements(v_result -> 'failed') f),
    'failures_stored', v_failures_stored
  );
end
$$;

-- ---------------------------------------------------------------------------------------------
-- The rollup counts what the rule counts; a conversion is one per (click, txid, type)
-- ---------------------------------------------------------------------------------------------

-- A conversion's key, from an event e: a click's conversions are told apart by txid and type
-- (as postbacks dedup them), a conversion without a click id is itself.
create or replace function private.conversion_key_sql() returns text
language sql
immutable
set search_path = ''
as $$
  select $k$case when e.click_id is null then jsonb_build_array(e.event_id)::text
              else jsonb_build_array(e.click_id, coalesce(e.properties ->> 'txid', ''), e.type)::text end$k$
$$;

-- Keys stored before a conversion's type was part of them: every one was of type `conversion`.
update public.rollup_conversions
   set conversion_key = (conversion_key::jsonb || '["conversion"]'::jsonb)::text
 where jsonb_array_length(conversion_key::jsonb) = 2;

create or replace function private.conversion_candidates_sql(p_where text) returns text
language sql
immutable
set search_path = ''
as $$
  select format($f$
    select e.org_id, %s as conversion_key, 'event' as role, e.event_id, e.occurred_at, e.received_at,
           e.status, e.value, coalesce(e.currency, '') as currency, e.campaign_id,
           nullif(e.creative_id, '') as creative_id, e.asset_ids,
           coalesce(e.context -> 'geo' ->> 'country', '') as country,
           coalesce(e.context -> 'device' ->> 'type', '') as device_type
    from public.events e
    where private.counts_as_conversion(e.type, e.context) and (%s)
  $f$, private.conversion_key_sql(), p_where)
$$;

create or replace function private.collect_range_conversion_candidates(p_range text, p_below xid8) returns void
language plpgsql
set search_path = ''
as $$
begin
  drop table if exists pg_temp.rollup_range_conversion_clicks;
  execute format($k$
    create temporary table rollup_range_conversion_clicks on commit drop as
    select distinct e.org_id, e.click_id, coalesce(e.properties ->> 'txid', '') as txid, e.type
    from public.events e
    where private.counts_as_conversion(e.type, e.context) and e.click_id is not null and (%s)
  $k$, p_range);
  analyze pg_temp.rollup_range_conversion_clicks;
  drop table if exists pg_temp.rollup_conversion_candidates;
  execute 'create temporary table rollup_conversion_candidates on commit drop as '
    || private.conversion_candidates_sql(format('e.click_id is null and %s', p_range))
    || ' union all '
    || private.conversion_candidates_sql(format(
         $w$e.ingest_xid < %L::xid8 and exists (
              select 1 from pg_temp.rollup_range_conversion_clicks k
              where k.org_id = e.org_id and k.click_id = e.click_id and k.type = e.type
                and k.txid = coalesce(e.properties ->> 'txid', ''))$w$, p_below));
end
$$;
