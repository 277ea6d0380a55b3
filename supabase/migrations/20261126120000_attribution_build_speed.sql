-- Attribution's full build, faster (issue 12's benchmark, bench/RESULTS.md): the same paths and
-- credits as before, found set-based instead of one conversion at a time.
--
-- 1. A touch's kept properties: most events' properties are already in the kept form (at most 16
--    scalar values, strings of at most 128 characters); those are kept as they are, tested by two
--    jsonpath scans (about 3 µs an event), and only the others go through the full normalisation
--    (about 19 µs: jsonb_each, a sort and an aggregate per event).
-- 2. private.attribution_touch_json without a SET clause, so that the planner inlines it.
-- 3. private.attribution_build: a chunk's paths by joins over the whole chunk (one pass over the
--    touches, one aggregate) rather than a lateral subquery per conversion, and chunks taken by a
--    keyset cursor: the partial index of pending paths keeps the entries of rows already built
--    until a vacuum, and a scan from its start walked past all of them on every chunk (the build
--    was quadratic: 29 s for 250k paths, 412 s for 500k).

-- The full normalisation: top-level strings, numbers and booleans, the first 16 by name, strings
-- cut to 128 characters; null when none.
create function private.attribution_normalised_properties(p_properties jsonb) returns jsonb
language sql
immutable
set search_path = ''
as $$
  select jsonb_object_agg(x.key, x.value)
  from (select e.key,
               case when jsonb_typeof(e.value) = 'string' then to_jsonb(left(e.value #>> '{}', 128)) else e.value end as value
        from jsonb_each(p_properties) e
        where jsonb_typeof(e.value) in ('string', 'number', 'boolean')
        order by e.key
        limit 16) x
$$;

-- The properties a touch keeps (as private.attribution_normalised_properties), the object itself
-- when it is already in that form. No SET clause: inlined into the insert that calls it.
create or replace function private.attribution_touch_properties(p_properties jsonb) returns jsonb
language sql
immutable
as $$
  select case
    when p_properties is null or jsonb_typeof(p_properties) <> 'object' or p_properties = '{}'::jsonb then null
    when not pg_catalog.jsonb_path_exists(p_properties,
           'strict $.* ? (!(@.type() == "string" || @.type() == "number" || @.type() == "boolean") || (@.type() == "string" && @ like_regex "^[\\s\\S]{129}"))')
         and pg_catalog.jsonb_array_length(pg_catalog.jsonb_path_query_array(p_properties, 'strict $.keyvalue()')) <= 16
      then p_properties
    else private.attribution_normalised_properties(p_properties)
  end
$$;

-- As before (20261125200000_attribution.sql), without the SET clause: inlined where called.
create or replace function private.attribution_touch_json(
  p_event_id text, p_at timestamptz, p_is_click boolean, p_campaign_id uuid, p_creative_id text, p_asset_ids uuid[], p_properties jsonb
) returns jsonb
language sql
stable
as $$
  select pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
    'id', p_event_id, 'at', floor(extract(epoch from p_at) * 1000)::bigint, 'k', case when p_is_click then 'c' else 'v' end,
    'cmp', p_campaign_id, 'crv', p_creative_id, 'ast', pg_catalog.array_to_string(p_asset_ids, ','), 'p', p_properties))
$$;

-- Builds the paths of up to p_limit conversions marked path_pending, after (p_after_org,
-- p_after_key) in key order (null: from the start), of organizations whose settings are valid
-- (the others wait for their settings to be fixed). Returns the last key taken: the caller goes
-- on from it, and starts again from the beginning once a pass finds nothing (rows marked pending
-- behind the cursor meanwhile). The path, as before: the user's touches before the conversion and
-- at or after the user's previous conversion, clicks within click_window_days and views within
-- view_window_days, with the click the conversion's click_id names even without a user key; with
-- click_beats_view a path holding a click keeps only its clicks; its 50 latest touches at most. A
-- changed path marks the credit. A conversion whose user changes (a late click gave it one) marks
-- the next conversions of both users.
drop function private.attribution_build(integer);
create function private.attribution_build(
  p_limit integer, p_after_org uuid, p_after_key text,
  out built integer, out changed integer, out last_org uuid, out last_key text
)
language plpgsql
set search_path = ''
set jit = off
as $$
declare
  v_valid uuid[];
  v_orgs uuid[];
  v_users text[];
  v_times timestamptz[];
begin
  -- the organizations whose settings are valid (the others' paths wait), read once each
  select coalesce(array_agg(o.id), '{}') into v_valid
  from public.organizations o
  where not private.attribution_settings(o.properties) ? 'error'
    and exists (select from public.attribution_paths p where p.org_id = o.id and p.path_pending);
  with
  settings as materialized (
    select o.id, private.attribution_settings(o.properties) as s from public.organizations o where o.id = any (v_valid)
  ),
  -- the chunk, locked (a second builder skips it), taken in key order along the partial index
  chosen as materialized (
    select p.org_id, p.conversion_key, p.converted_at, p.click_id, p.own_user_key, p.links_user,
           p.user_key as old_user_key, p.touches as old_touches,
           (s.s ->> 'click_window_days')::integer as click_days, (s.s ->> 'view_window_days')::integer as view_days,
           (s.s ->> 'click_beats_view')::boolean as click_beats_view
    -- per organization along its index (an `= any` over several would scan and sort them all)
    from (select k.org_id, k.conversion_key
          from unnest(v_valid) as o(id)
          cross join lateral (
            select p.org_id, p.conversion_key
            from public.attribution_paths p
            where p.org_id = o.id and p.path_pending
              and (p_after_org is null or (p.org_id, p.conversion_key) > (p_after_org, p_after_key))
            order by p.conversion_key
            limit p_limit) k
          order by k.org_id, k.conversion_key
          limit p_limit) k
    join public.attribution_paths p on p.org_id = k.org_id and p.conversion_key = k.conversion_key and p.path_pending
    join settings s on s.id = p.org_id
    for update of p skip locked
  ),
  -- the click a conversion's click_id names (the first with that id, as ingestion takes it), and
  -- the conversion's user: its own, else its click's
  named_clicks as (
    select distinct on (t.org_id, t.click_id) t.org_id, t.click_id, t.user_key, t.at, t.event_id, t.campaign_id,
           t.creative_id, t.asset_ids, t.properties
    from public.attribution_touches t
    where t.is_click and t.click_id is not null
      and (t.org_id, t.click_id) in (select c.org_id, c.click_id from chosen c where c.click_id is not null)
    order by t.org_id, t.click_id, t.at, t.event_id
  ),
  users as (
    select c.*, n.user_key as click_user_key, n.at as click_at, n.event_id as click_event_id, n.campaign_id as click_campaign_id,
           n.creative_id as click_creative_id, n.asset_ids as click_asset_ids, n.properties as click_properties,
           coalesce(c.own_user_key, case when c.links_user then nullif(n.user_key, '') end) as user_key
    from chosen c
    left join named_clicks n on n.org_id = c.org_id and n.click_id = c.click_id
  ),
  -- the earliest a touch may be: the longer window, and the user's previous conversion
  bounded as materialized (
    select u.*,
           greatest(u.converted_at - make_interval(days => greatest(u.click_days, u.view_days)),
                    (select max(q.converted_at) from public.attribution_paths q
                     where q.org_id = u.org_id and q.user_key = u.user_key
                       and (q.converted_at, q.conversion_key) < (u.converted_at, u.conversion_key))) as since
    from users u
  ),
  -- every conversion's candidate touches, and one placeholder row per conversion (no event):
  -- a conversion without a touch still has its row below, so that no join back to the chunk is
  -- needed (the planner, guessing a few rows, once joined the two by a nested loop: quadratic)
  candidates as (
    select b.org_id, b.conversion_key, b.click_beats_view, t.event_id, t.at, t.is_click, t.campaign_id, t.creative_id,
           t.asset_ids, t.properties, null::text as user_key, null::text as old_user_key, null::jsonb as old_touches,
           null::timestamptz as converted_at
    from bounded b
    join public.attribution_touches t
      on t.org_id = b.org_id and t.user_key = b.user_key and t.at >= b.since and t.at < b.converted_at
     and case when t.is_click then t.at >= b.converted_at - make_interval(days => b.click_days)
              else b.view_days > 0 and t.at >= b.converted_at - make_interval(days => b.view_days) end
    union all
    -- the named click, unless the user's own touches above hold it already
    select b.org_id, b.conversion_key, b.click_beats_view, b.click_event_id, b.click_at, true, b.click_campaign_id,
           b.click_creative_id, b.click_asset_ids, b.click_properties, null, null, null, null
    from bounded b
    where b.click_event_id is not null and b.click_at < b.converted_at
      and b.click_at >= b.converted_at - make_interval(days => b.click_days)
      and not (b.click_user_key is not distinct from b.user_key and b.click_at >= b.since)
    union all
    select b.org_id, b.conversion_key, b.click_beats_view, null, null, null, null, null, null, null,
           b.user_key, b.old_user_key, b.old_touches, b.converted_at
    from bounded b
  ),
  ranked as (
    select c.*, row_number() over (partition by c.org_id, c.conversion_key order by c.at desc nulls last, c.event_id desc) as recency
    from (select c.*, bool_or(c.is_click) over (partition by c.org_id, c.conversion_key) as has_click from candidates c) c
    -- with click_beats_view, a path holding a click keeps only its clicks
    where not coalesce(c.click_beats_view and c.has_click and not c.is_click, false)
  ),
  paths as (
    select r.org_id, r.conversion_key,
           (array_agg(r.user_key) filter (where r.event_id is null))[1] as user_key,
           (array_agg(r.old_user_key) filter (where r.event_id is null))[1] as old_user_key,
           (array_agg(r.old_touches) filter (where r.event_id is null))[1] as old_touches,
           (array_agg(r.converted_at) filter (where r.event_id is null))[1] as converted_at,
           coalesce(jsonb_agg(private.attribution_touch_json(r.event_id, r.at, r.is_click, r.campaign_id, r.creative_id, r.asset_ids, r.properties)
                              order by r.at, r.event_id) filter (where r.event_id is not null and r.recency <= 50), '[]') as touches,
           (count(*) filter (where r.event_id is not null and r.recency > 50))::integer as dropped
    from ranked r
    group by r.org_id, r.conversion_key
  ),
  updated as (
    update public.attribution_paths p
       set touches = n.touches, user_key = n.user_key, touches_dropped = n.dropped, path_pending = false,
           credited = case when p.credit_pending or p.touches is not distinct from n.touches then p.credited
                           else private.attribution_credited(p.converted_at, p.status, p.amount, p.currency, p.touches, p.credit_half_life) end,
           credit_pending = p.credit_pending or p.touches is distinct from n.touches,
           version = p.version + 1,
           updated_at = now()
      from paths n
     where p.org_id = n.org_id and p.conversion_key = n.conversion_key
    returning p.org_id, n.user_key, n.old_user_key, n.converted_at, n.touches is distinct from n.old_touches as path_changed
  ),
  moved as (
    select u.org_id, x.user_key, u.converted_at
    from updated u
    cross join lateral (values (u.user_key), (u.old_user_key)) as x(user_key)
    where u.user_key is distinct from u.old_user_key and x.user_key is not null
  )
  select (select count(*) from updated), (select count(*) from updated where path_changed),
         (select array_agg(m.org_id) from moved m), (select array_agg(m.user_key) from moved m),
         (select array_agg(m.converted_at) from moved m),
         (select c.org_id from chosen c order by c.org_id desc, c.conversion_key desc limit 1),
         (select c.conversion_key from chosen c order by c.org_id desc, c.conversion_key desc limit 1)
    into built, changed, v_orgs, v_users, v_times, last_org, last_key;
  if v_orgs is not null then
    perform private.attribution_reopen_after(v_orgs, v_users, v_times);
  end if;
end
$$;

revoke all on function
  private.attribution_normalised_properties(jsonb),
  private.attribution_touch_properties(jsonb),
  private.attribution_touch_json(text, timestamptz, boolean, uuid, text, uuid[], jsonb),
  private.attribution_build(integer, uuid, text)
  from public;
grant execute on function
  private.attribution_normalised_properties(jsonb),
  private.attribution_touch_properties(jsonb),
  private.attribution_touch_json(text, timestamptz, boolean, uuid, text, uuid[], jsonb),
  private.attribution_build(integer, uuid, text)
  to service_role;
