-- Metric storage built for the rollup's volume, and an additive incremental rollup.
--
-- Why: in sparse ad-tech shapes (hundreds of creatives x countries x device types x 96 buckets a
-- day) one event makes about 1.3 metric rows, so the cost of writing a row decides the rollup's
-- speed. The first metrics table keyed every row on (org, entity type, entity id, metric,
-- granularity, bucket, dimensions jsonb) with a second index: ~15 us per row written. Here a
-- series (org, metric, entity, granularity, dimensions) is named once in metric_series, and a
-- point is a narrow (org_id, series_id, bucket_start, value) row: ~2 us per row.
--
-- public.metrics stays, as a view with the same columns over the two tables (readers, RLS and
-- the campaign_summary view are unchanged), and stays writable for low-volume writers (later
-- jobs, psql): an insert names the series and adds the point.
--
-- The rollup now folds each window of new events in once, additively (value = value + delta),
-- atomically with its watermark: its cost follows the new events, never the history of the
-- buckets they touch. A conversion whose state changes (a status, a later amount, an earlier
-- first event) contributes its new state minus its old one, kept in rollup_conversions. A range
-- recompute (--from/--to) still rebuilds whole buckets absolutely from the log, counting exactly
-- the events below the watermark, so the two paths always agree; a point whose value nets to
-- zero is removed, and a recompute writes none.

create table public.metric_series (
  org_id uuid not null,
  id bigint generated always as identity,
  metric text not null check (metric ~ '^[a-z][a-z0-9_]{0,62}$'),
  entity_type text not null check (entity_type ~ '^[a-z][a-z0-9_]{0,62}$'),
  entity_id text not null check (length(entity_id) between 1 and 128),
  granularity text not null check (granularity in ('15m', 'hour', 'day', 'week', 'month')),
  -- e.g. {"country": "DE", "device_type": "mobile", "currency": "EUR"}; {} when none
  dimensions jsonb not null default '{}' check (jsonb_typeof(dimensions) = 'object'),
  properties jsonb not null default '{}' check (jsonb_typeof(properties) = 'object'),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  primary key (org_id, id),
  unique (org_id, entity_type, entity_id, metric, granularity, dimensions)
);
comment on table public.metric_series is 'One metric time series: what is counted, for which entity, split by which dimensions.';

-- No foreign key to metric_series: a check per written point would double the rollup's cost;
-- only the rollup and the metrics view's trigger write points, and both name the series first.
create table public.metric_points (
  org_id uuid not null,
  series_id bigint not null,
  bucket_start timestamptz not null,
  value numeric not null,
  primary key (org_id, series_id, bucket_start)
);
comment on table public.metric_points is 'The values of metric_series, one row per bucket (read them through public.metrics).';

create trigger touch_updated_at before update on public.metric_series
  for each row execute function private.touch_updated_at();

-- The rows of the first table move over: values and buckets unchanged; each series keeps the
-- properties of its latest row (the rollup wrote none).
insert into public.metric_series (org_id, metric, entity_type, entity_id, granularity, dimensions, properties)
select distinct on (m.org_id, m.entity_type, m.entity_id, m.metric, m.granularity, m.dimensions)
       m.org_id, m.metric, m.entity_type, m.entity_id, m.granularity, m.dimensions, m.properties
from public.metrics m
order by m.org_id, m.entity_type, m.entity_id, m.metric, m.granularity, m.dimensions, m.updated_at desc;

insert into public.metric_points (org_id, series_id, bucket_start, value)
select m.org_id, s.id, m.bucket_start, m.value
from public.metrics m
join public.metric_series s
  on s.org_id = m.org_id and s.entity_type = m.entity_type and s.entity_id = m.entity_id
 and s.metric = m.metric and s.granularity = m.granularity and s.dimensions = m.dimensions;

drop view public.campaign_summary;
drop table public.metrics;

create view public.metrics
with (security_invoker = true)
as
select s.org_id, s.metric, s.entity_type, s.entity_id, s.granularity, p.bucket_start, s.dimensions, p.value,
       s.properties, s.created_at, s.updated_at
from public.metric_series s
join public.metric_points p on p.org_id = s.org_id and p.series_id = s.id;
comment on view public.metrics is
  'Every metric value: one row per series and bucket (writable: an insert names the series and adds the point).';

-- Same definition as in 20261124160500_views.sql, now over the view.
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

-- Writes through the view. SECURITY INVOKER: the writer's own rights on the two tables apply
-- (members can only read them).
create function private.metrics_view_write() returns trigger
language plpgsql
set search_path = ''
as $$
declare
  v_series bigint;
begin
  if tg_op in ('UPDATE', 'DELETE') then
    delete from public.metric_points p
    using public.metric_series s
    where s.org_id = old.org_id and s.entity_type = old.entity_type and s.entity_id = old.entity_id
      and s.metric = old.metric and s.granularity = old.granularity and s.dimensions = old.dimensions
      and p.org_id = s.org_id and p.series_id = s.id and p.bucket_start = old.bucket_start;
    if tg_op = 'DELETE' then
      return old;
    end if;
  end if;
  insert into public.metric_series (org_id, metric, entity_type, entity_id, granularity, dimensions, properties)
  values (new.org_id, new.metric, new.entity_type, new.entity_id, new.granularity,
          coalesce(new.dimensions, '{}'), coalesce(new.properties, '{}'))
  on conflict (org_id, entity_type, entity_id, metric, granularity, dimensions) do nothing;
  select s.id into v_series
  from public.metric_series s
  where s.org_id = new.org_id and s.entity_type = new.entity_type and s.entity_id = new.entity_id
    and s.metric = new.metric and s.granularity = new.granularity and s.dimensions = coalesce(new.dimensions, '{}');
  -- a second value for the same series and bucket is refused (unique_violation), as by a table
  insert into public.metric_points (org_id, series_id, bucket_start, value)
  values (new.org_id, v_series, new.bucket_start, new.value);
  return new;
end
$$;
create trigger write_metrics instead of insert or update or delete on public.metrics
  for each row execute function private.metrics_view_write();

alter table public.metric_series enable row level security;
create policy "metric_series: members read" on public.metric_series
  for select to authenticated using (org_id in (select private.user_org_ids()));
alter table public.metric_points enable row level security;
create policy "metric_points: members read" on public.metric_points
  for select to authenticated using (org_id in (select private.user_org_ids()));

revoke all on table public.metric_series, public.metric_points, public.metrics, public.campaign_summary
  from anon, authenticated;
grant select on table public.metric_series, public.metric_points, public.metrics, public.campaign_summary
  to authenticated;
grant all on table public.metric_series, public.metric_points, public.metrics, public.campaign_summary
  to service_role;
revoke all on function private.metrics_view_write() from public;
grant execute on function private.metrics_view_write() to service_role;

-- ---------------------------------------------------------------------------------------------
-- The rollup. Both paths describe facts (one per event, conversions with signed amounts) as a
-- query, and private.apply_rollup_source() sums them per entity and adds them to the points.
-- ---------------------------------------------------------------------------------------------

drop function private.rollup_metrics_between(timestamptz, timestamptz);
drop function private.rollup_metrics();
drop function private.recompute_metric_buckets(jsonb);
drop function private.rollup_metric_names();
drop function private.bucket_15m(timestamptz);

-- What each conversion contributes to the points now: its first event (where and for what it
-- counts), its latest status, its latest amount. A step folds the window's events of a conversion
-- into its row and adds the difference of the two contributions, so it never re-reads the
-- conversion's older events, and a status change still finds what was counted after retention
-- dropped the partition of the first event. One row per conversion (about 1 % of events).
create table public.rollup_conversions (
  org_id uuid not null,
  -- ["click_id", "txid"], or ["event_id"] for a conversion without a click id
  conversion_key text not null,
  first_event_id text not null,
  first_at timestamptz not null,
  first_received_at timestamptz not null,
  campaign_id uuid,
  creative_id text,
  asset_ids uuid[] not null default '{}',
  country text not null default '',
  device_type text not null default '',
  status text not null,
  status_event_id text not null,
  status_received_at timestamptz not null,
  amount numeric,
  currency text not null default '',
  amount_event_id text,
  amount_received_at timestamptz,
  updated_at timestamptz not null default now(),
  primary key (org_id, conversion_key)
);
comment on table public.rollup_conversions is 'The rollup''s state of every conversion: what it adds to the metrics (backend only).';
alter table public.rollup_conversions enable row level security;
revoke all on table public.rollup_conversions from anon, authenticated;
grant all on table public.rollup_conversions to service_role;

-- A conversion's key, from an event e.
create function private.conversion_key_sql() returns text
language sql
immutable
set search_path = ''
as $$
  select $k$case when e.click_id is null then jsonb_build_array(e.event_id)::text
              else jsonb_build_array(e.click_id, coalesce(e.properties ->> 'txid', ''))::text end$k$
$$;

-- Conversion events matching p_where (a condition on public.events e), as candidates of the fold.
create function private.conversion_candidates_sql(p_where text) returns text
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
    where e.type = 'conversion' and (%s)
  $f$, private.conversion_key_sql(), p_where)
$$;

-- Folds the conversions named in pg_temp.rollup_conversion_candidates: their stored state goes
-- to pg_temp.rollup_conversions_before and joins the candidates (three each: its first event,
-- its latest status, its latest amount); the folded state goes to
-- pg_temp.rollup_conversions_after and is stored as theirs.
create function private.fold_conversions() returns void
language plpgsql
set search_path = ''
as $$
begin
  drop table if exists pg_temp.rollup_conversions_before;
  create temporary table rollup_conversions_before on commit drop as
  select l.*
  from public.rollup_conversions l
  join (select distinct c.org_id, c.conversion_key from pg_temp.rollup_conversion_candidates c) k
    on k.org_id = l.org_id and k.conversion_key = l.conversion_key;
  insert into pg_temp.rollup_conversion_candidates
  select b.org_id, b.conversion_key, 'first', b.first_event_id, b.first_at, b.first_received_at, null::text,
         null::numeric, '', b.campaign_id, b.creative_id, b.asset_ids, b.country, b.device_type
  from pg_temp.rollup_conversions_before b
  union all
  select b.org_id, b.conversion_key, 'status', b.status_event_id, null::timestamptz, b.status_received_at, b.status,
         null::numeric, '', null::uuid, null::text, '{}'::uuid[], '', ''
  from pg_temp.rollup_conversions_before b
  union all
  select b.org_id, b.conversion_key, 'amount', b.amount_event_id, null::timestamptz, b.amount_received_at, null::text,
         b.amount, b.currency, null::uuid, null::text, '{}'::uuid[], '', ''
  from pg_temp.rollup_conversions_before b
  where b.amount is not null;
  analyze pg_temp.rollup_conversion_candidates;

  drop table if exists pg_temp.rollup_conversions_after;
  create temporary table rollup_conversions_after on commit drop as select * from private.fold_conversion_states();
  insert into public.rollup_conversions
  select * from pg_temp.rollup_conversions_after
  on conflict (org_id, conversion_key) do update
     set first_event_id = excluded.first_event_id, first_at = excluded.first_at,
         first_received_at = excluded.first_received_at, campaign_id = excluded.campaign_id,
         creative_id = excluded.creative_id, asset_ids = excluded.asset_ids, country = excluded.country,
         device_type = excluded.device_type, status = excluded.status, status_event_id = excluded.status_event_id,
         status_received_at = excluded.status_received_at, amount = excluded.amount, currency = excluded.currency,
         amount_event_id = excluded.amount_event_id, amount_received_at = excluded.amount_received_at,
         updated_at = now();
end
$$;

-- The state of every conversion in pg_temp.rollup_conversion_candidates: the first event by
-- (occurred_at, received_at, event_id); the latest status by (received_at, event_id), none
-- meaning approved; the latest amount the same way among events with one. Min and max are
-- idempotent, so folding a stored state with new events equals folding all the events.
create function private.fold_conversion_states() returns setof public.rollup_conversions
language plpgsql
set search_path = ''
as $$
begin
  return query
  with firsts as (
    select distinct on (c.org_id, c.conversion_key) c.*
    from pg_temp.rollup_conversion_candidates c
    where c.role in ('event', 'first')
    order by c.org_id, c.conversion_key, c.occurred_at, c.received_at, c.event_id
  ),
  latest as (
    select distinct on (c.org_id, c.conversion_key) c.org_id, c.conversion_key, coalesce(c.status, 'approved') as status,
           c.event_id, c.received_at
    from pg_temp.rollup_conversion_candidates c
    where c.role in ('event', 'status')
    order by c.org_id, c.conversion_key, c.received_at desc, c.event_id desc
  ),
  amounts as (
    select distinct on (c.org_id, c.conversion_key) c.org_id, c.conversion_key, c.value, c.currency, c.event_id, c.received_at
    from pg_temp.rollup_conversion_candidates c
    where c.role in ('event', 'amount') and c.value is not null
    order by c.org_id, c.conversion_key, c.received_at desc, c.event_id desc
  )
  select f.org_id, f.conversion_key, f.event_id, f.occurred_at, f.received_at, f.campaign_id, f.creative_id,
         f.asset_ids, f.country, f.device_type, l.status, l.event_id, l.received_at,
         a.value, coalesce(a.currency, ''), a.event_id, a.received_at, now()
  from firsts f
  join latest l on l.org_id = f.org_id and l.conversion_key = f.conversion_key
  left join amounts a on a.org_id = f.org_id and a.conversion_key = f.conversion_key;
end
$$;

-- What the conversion states in the temporary table p_states contribute, as facts: one
-- conversion in the bucket of the first event, for its campaign, creative, assets, country and
-- device, and its amount, while the latest status is approved. p_sign 1 adds, -1 takes away.
create function private.conversion_facts(p_states text, p_sign integer)
returns table (org_id uuid, bucket timestamptz, campaign_id uuid, creative_id text, asset_ids uuid[],
               country text, device_type text, currency text, metric text, amount numeric)
language plpgsql
set search_path = ''
as $$
begin
  return query execute format($q$
    select s.org_id, date_bin('15 minutes', s.first_at, timestamptz '2000-01-01 00:00:00+00'),
           s.campaign_id, s.creative_id, s.asset_ids, s.country, s.device_type, x.currency, x.metric, $1 * x.amount
    from pg_temp.%I s
    cross join lateral (values ('conversions', 1::numeric, ''), ('conversion_value', s.amount, s.currency))
      as x(metric, amount, currency)
    where s.status = 'approved' and x.amount is not null
  $q$, p_states) using p_sign;
end
$$;

-- Every event (below p_below) of the conversions with an event matching p_range, as candidates:
-- by click_id and txid (indexed by click_id), or the lone event itself.
create function private.collect_range_conversion_candidates(p_range text, p_below xid8) returns void
language plpgsql
set search_path = ''
as $$
begin
  drop table if exists pg_temp.rollup_range_conversion_clicks;
  execute format($k$
    create temporary table rollup_range_conversion_clicks on commit drop as
    select distinct e.org_id, e.click_id, coalesce(e.properties ->> 'txid', '') as txid
    from public.events e
    where e.type = 'conversion' and e.click_id is not null and (%s)
  $k$, p_range);
  analyze pg_temp.rollup_range_conversion_clicks;
  drop table if exists pg_temp.rollup_conversion_candidates;
  execute 'create temporary table rollup_conversion_candidates on commit drop as '
    || private.conversion_candidates_sql(format('e.click_id is null and %s', p_range))
    || ' union all '
    || private.conversion_candidates_sql(format(
         $w$e.ingest_xid < %L::xid8 and exists (
              select 1 from pg_temp.rollup_range_conversion_clicks k
              where k.org_id = e.org_id and k.click_id = e.click_id
                and k.txid = coalesce(e.properties ->> 'txid', ''))$w$, p_below));
end
$$;

-- The events matching p_where other than conversions, one fact each: impressions and clicks
-- (bots apart), data usage (never bots), spend. Columns as private.conversion_facts returns them.
create function private.counted_events_sql(p_where text) returns text
language sql
immutable
set search_path = ''
as $$
  select format($f$
    select e.org_id, date_bin('15 minutes', e.occurred_at, timestamptz '2000-01-01 00:00:00+00') as bucket,
           e.campaign_id, nullif(e.creative_id, '') as creative_id, e.asset_ids,
           coalesce(e.context -> 'geo' ->> 'country', '') as country,
           coalesce(e.context -> 'device' ->> 'type', '') as device_type,
           case when e.type = 'spend' then coalesce(e.currency, '') else '' end as currency,
           case
             when e.type = 'impression' then case when (e.context ->> 'bot')::boolean then 'bot_impressions' else 'impressions' end
             when e.type = 'click' then case when (e.context ->> 'bot')::boolean then 'bot_clicks' else 'clicks' end
             when e.type = 'data_usage' then 'data_usage'
             else 'spend'
           end as metric,
           case when e.type = 'spend' then e.value else 1 end as amount
    from public.events e
    where (%s)
      and (e.type in ('impression', 'click')
           or (e.type = 'data_usage' and not coalesce((e.context ->> 'bot')::boolean, false))
           or (e.type = 'spend' and e.value is not null))
  $f$, p_where)
$$;

-- Adds the facts of p_source (a query with the columns of private.conversion_facts, signed
-- amounts) to the points: per organization, campaign, creative and data asset, with country and
-- device type (and currency for amounts) as dimensions. One pass of GROUPING SETS over the facts
-- gives the organization, campaign and creative sums (a second, over the facts with assets, the
-- data-asset sums); the few thousand series they name are resolved to ids once; then points of
-- series new in this run are plain inserts, the others one index probe each. Returns the number
-- of points written and the number of (org, bucket) pairs touched.
create function private.apply_rollup_source(p_source text, p_assets boolean, out points bigint, out buckets integer)
language plpgsql
set search_path = ''
as $$
declare
  v_merged bigint;
  v_settings text[];
begin
  drop table if exists pg_temp.rollup_entity_sums;
  execute format($q$
    create temporary table rollup_entity_sums on commit drop as
    select f.org_id, f.bucket, f.metric, f.country, f.device_type, f.currency,
           case when grouping(f.campaign_id) = 0 then 'campaign'
                when grouping(f.creative_id) = 0 then 'creative'
                else 'organization' end as entity_type,
           case when grouping(f.campaign_id) = 0 then f.campaign_id::text
                when grouping(f.creative_id) = 0 then f.creative_id
                else f.org_id::text end as entity_id,
           sum(f.amount) as value
    from (%s) f
    group by grouping sets ((f.org_id, f.bucket, f.metric, f.country, f.device_type, f.currency),
                            (f.org_id, f.bucket, f.metric, f.country, f.device_type, f.currency, f.campaign_id),
                            (f.org_id, f.bucket, f.metric, f.country, f.device_type, f.currency, f.creative_id))
    having (grouping(f.campaign_id) = 1 or f.campaign_id is not null)
       and (grouping(f.creative_id) = 1 or f.creative_id is not null)
  $q$, p_source);
  -- (skipped when no fact names an asset: it would scan the window a second time for nothing)
  if p_assets then
    execute format($q$
      insert into pg_temp.rollup_entity_sums
      select f.org_id, f.bucket, f.metric, f.country, f.device_type, f.currency, 'data_asset', a.asset_id::text,
             sum(f.amount)
      from (%s) f
      cross join lateral (select distinct x from unnest(f.asset_ids) as x) as a(asset_id)
      where f.asset_ids <> '{}'
      group by 1, 2, 3, 4, 5, 6, 8
    $q$, p_source);
  end if;
  analyze pg_temp.rollup_entity_sums;
  select count(*) into buckets
  from (select from pg_temp.rollup_entity_sums s where s.entity_type = 'organization' group by s.org_id, s.bucket) b;

  -- name every series once; those named by this run have no points yet
  drop table if exists pg_temp.rollup_series;
  create temporary table rollup_series on commit drop as
  select k.*, jsonb_strip_nulls(jsonb_build_object('country', nullif(k.country, ''), 'device_type', nullif(k.device_type, ''),
                                                   'currency', nullif(k.currency, ''))) as dimensions,
         null::bigint as series_id
  from (
    select distinct s.org_id, s.metric, s.entity_type, s.entity_id, s.country, s.device_type, s.currency
    from pg_temp.rollup_entity_sums s
  ) k;
  drop table if exists pg_temp.rollup_new_series;
  create temporary table rollup_new_series (id bigint primary key) on commit drop;
  with named as (
    insert into public.metric_series (org_id, metric, entity_type, entity_id, granularity, dimensions)
    select k.org_id, k.metric, k.entity_type, k.entity_id, '15m', k.dimensions
    from pg_temp.rollup_series k
    on conflict (org_id, entity_type, entity_id, metric, granularity, dimensions) do nothing
    returning id
  )
  insert into pg_temp.rollup_new_series select named.id from named;
  update pg_temp.rollup_series k
     set series_id = s.id
    from public.metric_series s
   where s.org_id = k.org_id and s.entity_type = k.entity_type and s.entity_id = k.entity_id
     and s.metric = k.metric and s.granularity = '15m' and s.dimensions = k.dimensions;
  analyze pg_temp.rollup_series;

  -- The planner underestimates a join on seven columns and would sort both sides on text; a hash
  -- join it is. The settings are restored after the merge.
  v_settings := array[current_setting('enable_nestloop'), current_setting('enable_mergejoin'),
                      current_setting('enable_hashjoin')];
  perform set_config('enable_nestloop', 'off', true), set_config('enable_mergejoin', 'off', true);
  drop table if exists pg_temp.rollup_deltas;
  create temporary table rollup_deltas on commit drop as
  select s.org_id, k.series_id, s.bucket, s.value, n.id is not null as new_series
  from pg_temp.rollup_entity_sums s
  join pg_temp.rollup_series k
    on k.org_id = s.org_id and k.metric = s.metric and k.entity_type = s.entity_type and k.entity_id = s.entity_id
   and k.country = s.country and k.device_type = s.device_type and k.currency = s.currency
  left join pg_temp.rollup_new_series n on n.id = k.series_id
  where s.value <> 0;
  analyze pg_temp.rollup_deltas;

  insert into public.metric_points (org_id, series_id, bucket_start, value)
  select d.org_id, d.series_id, d.bucket, trim_scale(d.value)
  from pg_temp.rollup_deltas d
  where d.new_series
  order by d.org_id, d.series_id, d.bucket;
  get diagnostics points = row_count;

  -- One index probe per delta: never a scan of all points (which grows with history) to build a
  -- hash table for the few thousand buckets a step touches.
  perform set_config('enable_nestloop', 'on', true), set_config('enable_hashjoin', 'off', true);
  merge into public.metric_points p
  using (select * from pg_temp.rollup_deltas d where not d.new_series) d
  on p.org_id = d.org_id and p.series_id = d.series_id and p.bucket_start = d.bucket
  when matched and p.value + d.value = 0 then delete
  when matched then update set value = trim_scale(p.value + d.value)
  when not matched then
    insert (org_id, series_id, bucket_start, value) values (d.org_id, d.series_id, d.bucket, trim_scale(d.value));
  get diagnostics v_merged = row_count;
  perform set_config('enable_nestloop', v_settings[1], true), set_config('enable_mergejoin', v_settings[2], true),
          set_config('enable_hashjoin', v_settings[3], true);
  points := points + v_merged;
end
$$;

-- One incremental step: folds in every event of the transactions between the watermark and the
-- oldest one still running (pg_snapshot_xmin), then moves the watermark, in one transaction.
-- Never two at once (a second caller returns at once with skipped); safe to run from pg-boss, a
-- Worker's scheduled() handler or psql.
create function private.rollup_metrics() returns jsonb
language plpgsql
set search_path = ''
-- big windows: sort and hash in memory; these queries gain nothing from JIT but its start-up
set work_mem = '128MB'
set jit = off
-- a cache of point lookups that never repeat (every delta is a distinct point)
set enable_memoize = off
as $$
declare
  v_started timestamptz := clock_timestamp();
  v_from xid8;
  v_to xid8 := pg_snapshot_xmin(pg_current_snapshot());
  v_events bigint;
  v_assets boolean;
  v_applied record;
  v_window text;
begin
  if not pg_try_advisory_xact_lock(hashtext('precise.rollup.metrics_15m')) then
    return jsonb_build_object('skipped', true, 'reason', 'another rollup is running');
  end if;
  select s.watermark into v_from from public.rollup_state s where s.name = 'metrics_15m' for update;
  -- the oldest running transaction never goes back, but a restored database might
  v_to := greatest(v_to, v_from);
  v_window := format('e.ingest_xid >= %L::xid8 and e.ingest_xid < %L::xid8', v_from, v_to);
  execute format('select count(*), coalesce(bool_or(e.asset_ids <> ''{}''), false) from public.events e where %s', v_window)
    into v_events, v_assets;

  -- conversions the window touches: their stored state folded with the window's events; the
  -- facts are the new contribution minus the stored one
  drop table if exists pg_temp.rollup_conversion_candidates;
  execute 'create temporary table rollup_conversion_candidates on commit drop as '
    || private.conversion_candidates_sql(v_window);
  perform private.fold_conversions();
  drop table if exists pg_temp.rollup_conversion_facts;
  create temporary table rollup_conversion_facts on commit drop as
  select * from private.conversion_facts('rollup_conversions_after', 1)
  union all
  select * from private.conversion_facts('rollup_conversions_before', -1);

  v_assets := v_assets or exists (select from pg_temp.rollup_conversion_facts f where f.asset_ids <> '{}');
  select * into v_applied
  from private.apply_rollup_source(
    private.counted_events_sql(v_window) || ' union all select * from pg_temp.rollup_conversion_facts', v_assets);

  update public.rollup_state s
     set watermark = v_to,
         last_run_at = v_started,
         last_duration_ms = (extract(epoch from clock_timestamp() - v_started) * 1000)::integer,
         last_events = v_events,
         last_buckets = v_applied.buckets,
         last_rows = v_applied.points,
         runs = s.runs + 1,
         updated_at = now()
   where s.name = 'metrics_15m';

  return jsonb_build_object('skipped', false, 'events', v_events, 'buckets', v_applied.buckets,
                            'rows', v_applied.points, 'watermark', v_to::text);
end
$$;

-- Rebuilds every bucket between two times from the log, whatever is stored (a backfill, or a
-- repair): exactly the events below the watermark count, as the incremental steps counted them,
-- so a recompute of a rolled-up range leaves the same rows.
create function private.rollup_metrics_between(p_from timestamptz, p_to timestamptz) returns jsonb
language plpgsql
set search_path = ''
-- big windows: sort and hash in memory; these queries gain nothing from JIT but its start-up
set work_mem = '128MB'
set jit = off
-- a cache of point lookups that never repeat (every delta is a distinct point)
set enable_memoize = off
as $$
declare
  v_below xid8;
  v_log_starts timestamptz;
  v_from timestamptz;
  v_to timestamptz;
  v_range text;
  v_assets boolean;
  v_applied record;
begin
  perform pg_advisory_xact_lock(hashtext('precise.rollup.metrics_15m'));
  select s.watermark, (s.properties ->> 'log_starts_at')::timestamptz into v_below, v_log_starts
  from public.rollup_state s where s.name = 'metrics_15m' for update;
  -- whole buckets only: a range cut inside a bucket would count part of it twice or not at all
  v_from := date_bin('15 minutes', p_from, timestamptz '2000-01-01 00:00:00+00');
  v_to := date_bin('15 minutes', p_to - interval '1 microsecond', timestamptz '2000-01-01 00:00:00+00') + interval '15 minutes';
  if v_log_starts is not null and v_from < v_log_starts then
    raise exception 'the raw events before % are dropped (retention): a range from % cannot be rebuilt from the log',
      v_log_starts, p_from
      using errcode = 'invalid_parameter_value';
  end if;
  v_range := format('e.occurred_at >= %L::timestamptz and e.occurred_at < %L::timestamptz and e.ingest_xid < %L::xid8',
                    v_from, v_to, v_below);

  delete from public.metric_points p
  using public.metric_series s
  where s.granularity = '15m'
    and s.metric in ('impressions', 'clicks', 'bot_impressions', 'bot_clicks', 'conversions',
                     'conversion_value', 'spend', 'data_usage')
    and p.org_id = s.org_id and p.series_id = s.id and p.bucket_start >= v_from and p.bucket_start < v_to;

  -- conversions with an event in the range count here if their first event is in it
  perform private.collect_range_conversion_candidates(v_range, v_below);
  perform private.fold_conversions();
  drop table if exists pg_temp.rollup_conversion_facts;
  create temporary table rollup_conversion_facts on commit drop as
  select * from private.conversion_facts('rollup_conversions_after', 1) c where c.bucket >= v_from and c.bucket < v_to;

  execute format('select coalesce(bool_or(e.asset_ids <> ''{}''), false) from public.events e where %s', v_range)
    into v_assets;
  v_assets := v_assets or exists (select from pg_temp.rollup_conversion_facts f where f.asset_ids <> '{}');
  select * into v_applied
  from private.apply_rollup_source(
    private.counted_events_sql(v_range) || ' union all select * from pg_temp.rollup_conversion_facts', v_assets);
  return jsonb_build_object('buckets', v_applied.buckets, 'rows', v_applied.points, 'from', v_from, 'to', v_to);
end
$$;

revoke all on function private.conversion_key_sql(), private.conversion_candidates_sql(text),
  private.fold_conversions(), private.fold_conversion_states(), private.conversion_facts(text, integer),
  private.collect_range_conversion_candidates(text, xid8),
  private.counted_events_sql(text), private.apply_rollup_source(text, boolean), private.rollup_metrics(),
  private.rollup_metrics_between(timestamptz, timestamptz) from public;
grant execute on function private.conversion_key_sql(), private.conversion_candidates_sql(text),
  private.fold_conversions(), private.fold_conversion_states(), private.conversion_facts(text, integer),
  private.collect_range_conversion_candidates(text, xid8),
  private.counted_events_sql(text), private.apply_rollup_source(text, boolean), private.rollup_metrics(),
  private.rollup_metrics_between(timestamptz, timestamptz) to service_role;

-- The state of the conversions already in the metrics, from the log below the watermark (the
-- previous rollup counted exactly those events).
do $$
begin
  execute 'create temporary table rollup_conversion_candidates as '
    || private.conversion_candidates_sql(format('e.ingest_xid < %L::xid8',
         (select s.watermark from public.rollup_state s where s.name = 'metrics_15m')));
end
$$;
insert into public.rollup_conversions select * from private.fold_conversion_states();
drop table pg_temp.rollup_conversion_candidates;

-- ---------------------------------------------------------------------------------------------
-- Reading: the sums of one entity's 15-minute points into hours, days, weeks or months of an IANA
-- time zone (exact: every zone's offset is a multiple of 15 minutes), every local bucket from
-- p_from to p_to listed (empty ones too, so a chart can draw them) and stepped in local wall time
-- so that days stay days across daylight-saving changes. One function for every driver: SQL on
-- Postgres and PGlite, supabase-js rpc on a Supabase edge deployment (service role only). One
-- jsonb value, not a set of rows: PostgREST cuts sets at its max_rows (1,000 by default).
-- ---------------------------------------------------------------------------------------------
create function public.metric_buckets(
  p_org_id uuid,
  p_entity_type text,
  p_entity_id text,
  p_metrics text[],
  p_from timestamptz,
  p_to timestamptz,
  p_granularity text,
  p_time_zone text,
  p_currency text default null
)
returns jsonb
language sql
stable
set search_path = ''
as $$
  with chosen as (
    -- amounts restricted to the currency asked for; counters have none
    select s.id, s.metric, s.dimensions ->> 'currency' as currency
    from public.metric_series s
    where s.org_id = p_org_id and s.entity_type = p_entity_type and s.entity_id = p_entity_id
      and s.granularity = '15m' and s.metric = any (p_metrics)
      and (p_currency is null or s.metric not in ('spend', 'conversion_value') or s.dimensions ->> 'currency' = p_currency)
  ),
  points as (
    select c.metric, c.currency, p.bucket_start, p.value
    from chosen c
    join public.metric_points p on p.org_id = p_org_id and p.series_id = c.id
    where p.bucket_start >= p_from and p.bucket_start < p_to
  ),
  summed as (
    select date_trunc(p_granularity, p.bucket_start at time zone p_time_zone) as local_bucket, p.metric, sum(p.value) as value
    from points p
    group by 1, 2
  ),
  buckets as (
    select generate_series(
             date_trunc(p_granularity, p_from at time zone p_time_zone),
             (p_to at time zone p_time_zone) - interval '1 microsecond',
             ('1 ' || p_granularity)::interval) as local_bucket
  )
  select jsonb_build_object(
    -- the currencies of the amounts summed, so that the caller can refuse to add USD to EUR
    'currencies', coalesce((select jsonb_agg(distinct p.currency) from points p where p.currency is not null), '[]'),
    -- one array per bucket and metric: local time, offset in minutes, metric (or null), sum
    'rows', coalesce((
      select jsonb_agg(jsonb_build_array(
               to_char(b.local_bucket, 'YYYY-MM-DD"T"HH24:MI:SS'),
               (extract(epoch from b.local_bucket - ((b.local_bucket at time zone p_time_zone) at time zone 'UTC')) / 60)::integer,
               v.metric, v.value::text) order by b.local_bucket, v.metric)
      from buckets b
      left join summed v on v.local_bucket = b.local_bucket), '[]'))
$$;
comment on function public.metric_buckets(uuid, text, text, text[], timestamptz, timestamptz, text, text, text) is
  'GET /v1/metrics: one entity''s metrics summed into local hours, days, weeks or months (backend only).';
revoke all on function public.metric_buckets(uuid, text, text, text[], timestamptz, timestamptz, text, text, text)
  from public, anon, authenticated;
grant execute on function public.metric_buckets(uuid, text, text, text[], timestamptz, timestamptz, text, text, text)
  to service_role;
