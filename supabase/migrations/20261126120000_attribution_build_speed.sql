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
-- every step follows an index (the chunk's keys, the users' touches, the previous conversion); a
-- scan of a whole store per chunk would make the build quadratic (see attribution_apply_credits)
set enable_seqscan = off
as $$
declare
  v_valid uuid[];
  v_orgs uuid[];
  v_users text[];
  v_times timestamptz[];
begin
  -- the organizations whose settings are valid (the others' paths wait), read once each; not
  -- "those with a pending path": that test would walk the index's dead entries too
  select coalesce(array_agg(o.id), '{}') into v_valid
  from public.organizations o
  where not private.attribution_settings(o.properties) ? 'error'
    and (p_after_org is null or o.id >= p_after_org);
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
           -- (the user a pruned click gave it stays: retention prunes touches, never paths)
           coalesce(c.own_user_key, case when c.links_user then coalesce(nullif(n.user_key, ''), c.old_user_key) end) as user_key
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

-- ---------------------------------------------------------------------------------------------
-- Credits, summed by the job. Each conversion's credit per model and dimension is now a whole
-- number of 10^-12 (the channels' shares rounded by largest remainder, so that they sum to
-- exactly 1), and the job sums a chunk's credits per point exactly (integers, and the amounts as
-- decimals), sending one row per point instead of one per conversion, channel and model (about
-- 27 a conversion). A withdrawal is the same integers negated, so it still cancels to zero.
-- ---------------------------------------------------------------------------------------------

-- Up to p_limit conversions whose credit is pending and path built (organizations with valid
-- settings), after the cursor (p_after_org, p_after_at, p_after_key) in (organization, time, key)
-- order (null: from the start): the state to credit now and what the metrics hold (`credited`, null
-- for nothing), each as {at (text, exact), ms (epoch ms), status, amount, currency, touches,
-- half_life}, the version they were read at, the amounts as exact text (a JSON number of more than
-- 15 digits would not come back exact), and converted_at as exact text for the next cursor.
-- Nothing is locked: the write takes only the versions still current. As the path build, taken
-- by a cursor: the pending index keeps the entries of credited rows until a vacuum, and a scan
-- from its start walked past all of them on every chunk (399 s to credit 1M conversions, 19 s
-- for 100k).
drop function private.attribution_credit_work(integer);
create function private.attribution_credit_work(p_limit integer, p_after_org uuid, p_after_at timestamptz, p_after_key text)
returns table (org_id uuid, conversion_key text, version bigint, half_life numeric, current_state jsonb, credited_state jsonb,
               current_amount text, credited_amount text, converted_at text)
language sql
stable
set search_path = ''
as $$
  with orgs as materialized (
    select o.id, private.attribution_settings(o.properties) as s
    from public.organizations o
    where p_after_org is null or o.id >= p_after_org
  )
  select p.org_id, p.conversion_key, p.version, (o.s ->> 'time_decay_half_life_days')::numeric,
         private.attribution_credited(p.converted_at, p.status, p.amount, p.currency, p.touches, null)
           || jsonb_build_object('ms', floor(extract(epoch from p.converted_at) * 1000)::bigint),
         case when p.credited is not null then p.credited
           || jsonb_build_object('ms', floor(extract(epoch from (p.credited ->> 'at')::timestamptz) * 1000)::bigint) end,
         p.amount::text,
         p.credited ->> 'amount',
         p.converted_at::text
  from orgs o
  -- in time order, so that a chunk's conversions share buckets; per organization along its index
  cross join lateral (
    select p.*
    from public.attribution_paths p
    where p.org_id = o.id and p.credit_pending and not p.path_pending
      and (p_after_org is null or (p.org_id, p.converted_at, p.conversion_key) > (p_after_org, p_after_at, p_after_key))
    order by p.converted_at, p.conversion_key
    limit p_limit
  ) p
  where not o.s ? 'error'
  order by p.org_id, p.converted_at, p.conversion_key
  limit p_limit
$$;

-- Writes a chunk's credits, summed per point by the job, for the conversions it read, all or
-- nothing: when one of them changed since (or another run credited it), nothing is written and
-- credited is 0 (the next chunk reads them again). One call is one transaction, so a credit is
-- written exactly once.
--   the conversions read: p_orgs, p_keys, p_versions, p_half_lives (one element each);
--   the points, one element each: p_point_orgs, p_buckets (15-minute bucket starts), p_currencies
--   (null for none), p_entity_types (the dimension), p_entity_ids (the channel), p_models,
--   p_conversions (the credit to add to attributed_conversions), p_values (to attributed_value;
--   null without an amount).
-- New series are named in the same statement, as the rollup names them; points that net to zero
-- are removed.
drop function private.attribution_apply_credits(uuid[], text[], bigint[], numeric[], integer[], timestamptz[], text[], numeric[], text[], text[], text[], numeric[]);
create function private.attribution_apply_credits(
  p_orgs uuid[], p_keys text[], p_versions bigint[], p_half_lives numeric[],
  p_point_orgs uuid[], p_buckets timestamptz[], p_currencies text[], p_entity_types text[], p_entity_ids text[],
  p_models text[], p_conversions numeric[], p_values numeric[],
  out credited bigint, out points bigint
)
language plpgsql
set search_path = ''
set jit = off
-- planned for each chunk's arrays (their lengths known), not a generic plan guessing 100 rows
set plan_cache_mode = force_custom_plan
-- the chunk's rows by their primary key: knowing 5,000 keys, the planner preferred hashing them
-- against a scan of the whole table, once per chunk (quadratic: 404 s to credit 1M conversions)
set enable_seqscan = off
as $$
declare
  v_current bigint;
  v_zero_orgs uuid[];
  v_zero_series bigint[];
  v_zero_buckets timestamptz[];
begin
  -- One credit writer at a time: no other run names one of the series named below meanwhile.
  perform pg_advisory_xact_lock(hashtext('precise.attribution.credits'));
  -- the conversions still as read, locked until the end (the version read implies credit_pending)
  select count(*) into v_current
  from (select 1
        from public.attribution_paths p
        join unnest(p_orgs, p_keys, p_versions) as d(org_id, conversion_key, version)
          on p.org_id = d.org_id and p.conversion_key = d.conversion_key and p.version = d.version
        for update of p) x;
  if v_current < coalesce(array_length(p_orgs, 1), 0) then
    credited := 0;
    points := 0;
    return;
  end if;
  update public.attribution_paths p
     set credit_pending = false, credited = null, credit_half_life = d.half_life,
         version = p.version + 1, updated_at = now()
    from unnest(p_orgs, p_keys, p_half_lives) as d(org_id, conversion_key, half_life)
   where p.org_id = d.org_id and p.conversion_key = d.conversion_key;
  get diagnostics credited = row_count;

  with deltas as materialized (
    select c.org_id, m.metric, c.entity_type, c.entity_id,
           jsonb_strip_nulls(jsonb_build_object('model', c.model, 'currency', c.currency)) as dimensions,
           c.bucket, m.value
    from unnest(p_point_orgs, p_buckets, p_currencies, p_entity_types, p_entity_ids, p_models, p_conversions, p_values)
           as c(org_id, bucket, currency, entity_type, entity_id, model, conversions, value)
    cross join lateral (values ('attributed_conversions', c.conversions), ('attributed_value', c.value)) as m(metric, value)
    -- no amount, no value point; a sum of nothing is no point
    where m.value <> 0
  ),
  keys as (
    select distinct d.org_id, d.metric, d.entity_type, d.entity_id, d.dimensions from deltas d
  ),
  known as (
    select k.*, s.id as series_id
    from keys k
    join public.metric_series s
      on s.org_id = k.org_id and s.entity_type = k.entity_type and s.entity_id = k.entity_id
     and s.metric = k.metric and s.granularity = '15m' and s.dimensions = k.dimensions
  ),
  named as (
    insert into public.metric_series (org_id, metric, entity_type, entity_id, granularity, dimensions)
    select k.org_id, k.metric, k.entity_type, k.entity_id, '15m', k.dimensions
    from keys k
    where not exists (select from known n
                      where n.org_id = k.org_id and n.metric = k.metric and n.entity_type = k.entity_type
                        and n.entity_id = k.entity_id and n.dimensions = k.dimensions)
    returning id as series_id, org_id, metric, entity_type, entity_id, dimensions
  ),
  series as (
    select n.org_id, n.metric, n.entity_type, n.entity_id, n.dimensions, n.series_id from known n
    union all
    select n.org_id, n.metric, n.entity_type, n.entity_id, n.dimensions, n.series_id from named n
  ),
  added as (
    insert into public.metric_points as p (org_id, series_id, bucket_start, value)
    select d.org_id, k.series_id, d.bucket, trim_scale(d.value)
    from deltas d
    join series k
      on k.org_id = d.org_id and k.metric = d.metric and k.entity_type = d.entity_type and k.entity_id = d.entity_id
     and k.dimensions = d.dimensions
    on conflict (org_id, series_id, bucket_start) do update set value = trim_scale(p.value + excluded.value)
    returning p.org_id, p.series_id, p.bucket_start, p.value
  )
  select count(*), array_agg(a.org_id) filter (where a.value = 0),
         array_agg(a.series_id) filter (where a.value = 0), array_agg(a.bucket_start) filter (where a.value = 0)
    into points, v_zero_orgs, v_zero_series, v_zero_buckets
    from added a;
  -- a point that nets to zero (a conversion rejected, a path moved) is no point
  if v_zero_orgs is not null then
    delete from public.metric_points p
    using unnest(v_zero_orgs, v_zero_series, v_zero_buckets) as z(org_id, series_id, bucket_start)
    where p.org_id = z.org_id and p.series_id = z.series_id and p.bucket_start = z.bucket_start and p.value = 0;
  end if;
end
$$;

revoke all on function
  private.attribution_credit_work(integer, uuid, timestamptz, text),
  private.attribution_apply_credits(uuid[], text[], bigint[], numeric[], uuid[], timestamptz[], text[], text[], text[], text[], numeric[], numeric[])
  from public;
grant execute on function
  private.attribution_credit_work(integer, uuid, timestamptz, text),
  private.attribution_apply_credits(uuid[], text[], bigint[], numeric[], uuid[], timestamptz[], text[], text[], text[], text[], numeric[], numeric[])
  to service_role;
