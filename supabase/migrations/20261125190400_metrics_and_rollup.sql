-- Metrics: where they are stored, the rollup that writes them from the event log, and the
-- reader of GET /v1/metrics.
--
-- Storage. A series (org, metric, entity, granularity, dimensions) is named once in
-- metric_series, and a point is a narrow (org_id, series_id, bucket_start, value) row: in sparse
-- ad-tech shapes (hundreds of creatives x countries x device types x 96 buckets a day) one event
-- makes about 1.3 points, so the cost of writing a point decides the rollup's speed (~2 us per
-- point here, against ~15 us for a row keyed on every column with a second index).
-- public.metrics is a view with every column over the two, writable for low-volume writers.
--
-- The rollup. The stored grain is 15-minute UTC buckets: every IANA time zone's hours and days,
-- UTC+05:45 and daylight-saving days included, are exact sums of them. Each incremental step
-- folds in the events of the transactions between its watermark and the oldest one still running
-- (events.ingest_xid), additively (value = value + delta), atomically with the watermark: its
-- cost follows the new events, never the history of the buckets they touch. A conversion whose
-- state changes (a status, a later amount, an earlier first event) contributes its new state
-- minus its old one, kept in rollup_conversions. A range recompute rebuilds whole buckets
-- absolutely from the log, counting exactly the events below the watermark, so the two paths
-- always agree; a point whose value nets to zero is removed.

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
-- Every metric value, one row per series and bucket, as one table would hold them.
create view public.metrics
with (security_invoker = true)
as
select s.org_id, s.metric, s.entity_type, s.entity_id, s.granularity, p.bucket_start, s.dimensions, p.value,
       s.properties, s.created_at, s.updated_at
from public.metric_series s
join public.metric_points p on p.org_id = s.org_id and p.series_id = s.id;
comment on view public.metrics is
  'Every metric value: one row per series and bucket (writable: an insert names the series and adds the point).';

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

-- Counters per campaign, summed over the stored 15-minute grain (never over raw events).
-- Dimensions split a counter into disjoint parts, so their sum is the total. Ratios are
-- computed from the summed counters, never averaged. security_invoker: the caller's RLS applies.
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
-- The rollup's state
-- ---------------------------------------------------------------------------------------------

create table public.rollup_state (
  name text primary key,
  -- every event of a transaction below this id is rolled up
  watermark xid8 not null default '0',
  last_run_at timestamptz,
  last_duration_ms integer,
  last_events bigint,
  last_buckets integer,
  last_rows bigint,
  runs bigint not null default 0,
  -- log_starts_at: where the raw log starts after retention (a range before it cannot be rebuilt)
  properties jsonb not null default '{}' check (jsonb_typeof(properties) = 'object'),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
comment on table public.rollup_state is 'Watermarks and last-run figures of the rollup jobs (backend only).';
alter table public.rollup_state enable row level security;
revoke all on table public.rollup_state from anon, authenticated;
grant all on table public.rollup_state to service_role;
insert into public.rollup_state (name) values ('metrics_15m');

-- What each conversion contributes to the points now: its first event (where and for what it
-- counts), its latest status, its latest amount. A step folds the window's events of a conversion
-- into its row and adds the difference of the two contributions, so it never re-reads the
-- conversion's older events, and a status change still finds what was counted after retention
-- dropped the partition of the first event. One row per conversion (about 1 % of events).
create table public.rollup_conversions (
  org_id uuid not null,
  -- ["click_id", "txid", "type"], or ["event_id"] for a conversion without a click id
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

-- ---------------------------------------------------------------------------------------------
-- The rollup's reads, as typed functions over parameters. A pass reads the events of the
-- transactions in [p_xid_from, p_xid_to) that occurred in [p_from, p_to): an incremental step
-- passes its window of transactions and an unbounded time range, a range recompute a time range
-- and everything below the watermark. Plain SQL without a SET clause, so that the planner
-- inlines them into the statement that reads them and plans each with the caller's values.
-- ---------------------------------------------------------------------------------------------

-- One conversion event, keyed: a click's conversions are told apart by txid and type (as
-- postbacks dedup them); a conversion without a click id is itself.
create type private.conversion_event as (
  org_id uuid,
  conversion_key text,
  click_id text,
  event_id text,
  occurred_at timestamptz,
  received_at timestamptz,
  status text,
  value numeric,
  currency text,
  campaign_id uuid,
  creative_id text,
  asset_ids uuid[],
  country text,
  device_type text
);

-- One thing to add to the points: an amount of a metric in a 15-minute bucket, for an
-- organization, a campaign, a creative and data assets, with country and device type (and the
-- currency of an amount) as dimensions. A negative amount takes away what was added before.
create type private.metric_fact as (
  org_id uuid,
  bucket timestamptz,
  campaign_id uuid,
  creative_id text,
  asset_ids uuid[],
  country text,
  device_type text,
  currency text,
  metric text,
  amount numeric
);

create function private.conversion_events(p_xid_from xid8, p_xid_to xid8, p_from timestamptz, p_to timestamptz)
returns setof private.conversion_event
language sql
stable
as $$
  select e.org_id,
         case when e.click_id is null then jsonb_build_array(e.event_id)::text
              else jsonb_build_array(e.click_id, coalesce(e.properties ->> 'txid', ''), e.type)::text end,
         e.click_id, e.event_id, e.occurred_at, e.received_at, e.status, e.value, coalesce(e.currency, ''),
         e.campaign_id, nullif(e.creative_id, ''), e.asset_ids,
         coalesce(e.context -> 'geo' ->> 'country', ''), coalesce(e.context -> 'device' ->> 'type', '')
  from public.events e
  where e.ingest_xid >= p_xid_from and e.ingest_xid < p_xid_to
    and e.occurred_at >= p_from and e.occurred_at < p_to
    and private.counts_as_conversion(e.type, e.context)
$$;

-- The events other than conversions, one fact each: impressions and clicks (bots apart), data
-- usage (never bots), spend.
create function private.event_facts(p_xid_from xid8, p_xid_to xid8, p_from timestamptz, p_to timestamptz)
returns setof private.metric_fact
language sql
stable
as $$
  select e.org_id, date_bin('15 minutes', e.occurred_at, timestamptz '2000-01-01 00:00:00+00'),
         e.campaign_id, nullif(e.creative_id, ''), e.asset_ids,
         coalesce(e.context -> 'geo' ->> 'country', ''), coalesce(e.context -> 'device' ->> 'type', ''),
         case when e.type = 'spend' then coalesce(e.currency, '') else '' end,
         case
           when e.type = 'impression' then case when (e.context ->> 'bot')::boolean then 'bot_impressions' else 'impressions' end
           when e.type = 'click' then case when (e.context ->> 'bot')::boolean then 'bot_clicks' else 'clicks' end
           when e.type = 'data_usage' then 'data_usage'
           else 'spend'
         end,
         case when e.type = 'spend' then e.value else 1 end
  from public.events e
  where e.ingest_xid >= p_xid_from and e.ingest_xid < p_xid_to
    and e.occurred_at >= p_from and e.occurred_at < p_to
    and (e.type in ('impression', 'click')
         or (e.type = 'data_usage' and not coalesce((e.context ->> 'bot')::boolean, false))
         or (e.type = 'spend' and e.value is not null))
$$;

-- The conversions the selected events belong to, each as stored before and as folded now: the
-- first event by (occurred_at, received_at, event_id), the latest status by (received_at,
-- event_id), none meaning approved, and the latest amount the same way among events with one.
-- Min and max are idempotent, so folding a stored state with new events equals folding all the
-- events. With p_whole_conversions (a range recompute), every event below p_xid_to of a clicked
-- conversion the range names is folded in too, wherever it occurred.
create function private.folded_conversions(
  p_xid_from xid8, p_xid_to xid8, p_from timestamptz, p_to timestamptz, p_whole_conversions boolean
)
returns table (stored_state public.rollup_conversions, folded_state public.rollup_conversions)
language sql
stable
as $$
  with named as (
    select * from private.conversion_events(p_xid_from, p_xid_to, p_from, p_to)
  ),
  candidates as (
    select n.* from named n where not p_whole_conversions or n.click_id is null
    union all
    select c.*
    from private.conversion_events('0', p_xid_to, '-infinity', 'infinity') c
    where p_whole_conversions and c.click_id is not null
      and exists (select from named n
                  where n.org_id = c.org_id and n.click_id = c.click_id and n.conversion_key = c.conversion_key)
  ),
  stored as (
    select s.*, s as state
    from public.rollup_conversions s
    where (s.org_id, s.conversion_key) in (select c.org_id, c.conversion_key from candidates c)
  ),
  -- every event, and the three parts of a stored state, as one kind of row
  parts as (
    select c.org_id, c.conversion_key, 'event' as role, c.event_id, c.occurred_at, c.received_at, c.status,
           c.value, c.currency, c.campaign_id, c.creative_id, c.asset_ids, c.country, c.device_type
    from candidates c
    union all
    select s.org_id, s.conversion_key, 'first', s.first_event_id, s.first_at, s.first_received_at, null,
           null, '', s.campaign_id, s.creative_id, s.asset_ids, s.country, s.device_type
    from stored s
    union all
    select s.org_id, s.conversion_key, 'status', s.status_event_id, null, s.status_received_at, s.status,
           null, '', null, null, '{}', '', ''
    from stored s
    union all
    select s.org_id, s.conversion_key, 'amount', s.amount_event_id, null, s.amount_received_at, null,
           s.amount, s.currency, null, null, '{}', '', ''
    from stored s
    where s.amount is not null
  ),
  firsts as (
    select distinct on (p.org_id, p.conversion_key) p.*
    from parts p
    where p.role in ('event', 'first')
    order by p.org_id, p.conversion_key, p.occurred_at, p.received_at, p.event_id
  ),
  latest as (
    select distinct on (p.org_id, p.conversion_key) p.org_id, p.conversion_key,
           coalesce(p.status, 'approved') as status, p.event_id, p.received_at
    from parts p
    where p.role in ('event', 'status')
    order by p.org_id, p.conversion_key, p.received_at desc, p.event_id desc
  ),
  amounts as (
    select distinct on (p.org_id, p.conversion_key) p.org_id, p.conversion_key, p.value, p.currency,
           p.event_id, p.received_at
    from parts p
    where p.role in ('event', 'amount') and p.value is not null
    order by p.org_id, p.conversion_key, p.received_at desc, p.event_id desc
  )
  select s.state,
         row(f.org_id, f.conversion_key, f.event_id, f.occurred_at, f.received_at, f.campaign_id, f.creative_id,
             f.asset_ids, f.country, f.device_type, l.status, l.event_id, l.received_at,
             a.value, coalesce(a.currency, ''), a.event_id, a.received_at, now())::public.rollup_conversions
  from firsts f
  join latest l on l.org_id = f.org_id and l.conversion_key = f.conversion_key
  left join amounts a on a.org_id = f.org_id and a.conversion_key = f.conversion_key
  left join stored s on s.org_id = f.org_id and s.conversion_key = f.conversion_key
$$;

-- What a conversion's state contributes: one conversion in the bucket of its first event, for
-- its campaign, creative, assets, country and device, and its amount, while its latest status is
-- approved. p_sign 1 adds, -1 takes away; a null state contributes nothing.
create function private.conversion_facts(p_state public.rollup_conversions, p_sign integer)
returns setof private.metric_fact
language sql
immutable
as $$
  select (p_state).org_id, date_bin('15 minutes', (p_state).first_at, timestamptz '2000-01-01 00:00:00+00'),
         (p_state).campaign_id, (p_state).creative_id, (p_state).asset_ids, (p_state).country,
         (p_state).device_type, x.currency, x.metric, p_sign * x.amount
  from (values ('conversions', 1::numeric, ''), ('conversion_value', (p_state).amount, (p_state).currency))
    as x(metric, amount, currency)
  where (p_state).status = 'approved' and x.amount is not null
$$;

-- ---------------------------------------------------------------------------------------------
-- The rollup's write: one statement folds the selected events into the conversions' state and
-- the points.
-- ---------------------------------------------------------------------------------------------

-- Adds the facts of the selected events (and the change of the conversions they touch) to the
-- points: per organization, campaign, creative and data asset, with country and device type (and
-- currency for amounts) as dimensions. One pass of GROUPING SETS gives the organization, campaign
-- and creative sums (a second, over the facts with assets, the data-asset sums: skipped for the
-- events when p_assets says none has one, as it would read them again for nothing); the series
-- they name are resolved to ids once; points of series new in this run are plain inserts, the
-- others one index probe each (INSERT ... ON CONFLICT). A recompute (p_recompute) adds what the
-- conversions whose first event is in [p_from, p_to) contribute now, to points it has emptied; a
-- step adds each touched conversion's new contribution minus its stored one. Returns the number
-- of points written and of (organization, bucket) pairs touched.
create function private.fold_into_metrics(
  p_xid_from xid8, p_xid_to xid8, p_from timestamptz, p_to timestamptz, p_recompute boolean, p_assets boolean,
  out points bigint, out buckets integer
)
language plpgsql
set search_path = ''
as $$
declare
  v_zero_orgs uuid[];
  v_zero_series bigint[];
  v_zero_buckets timestamptz[];
begin
  with folded as materialized (
    select * from private.folded_conversions(p_xid_from, p_xid_to, p_from, p_to, p_recompute)
  ),
  kept as (
    insert into public.rollup_conversions
    select (f.folded_state).* from folded f
    on conflict (org_id, conversion_key) do update
       set first_event_id = excluded.first_event_id, first_at = excluded.first_at,
           first_received_at = excluded.first_received_at, campaign_id = excluded.campaign_id,
           creative_id = excluded.creative_id, asset_ids = excluded.asset_ids, country = excluded.country,
           device_type = excluded.device_type, status = excluded.status, status_event_id = excluded.status_event_id,
           status_received_at = excluded.status_received_at, amount = excluded.amount, currency = excluded.currency,
           amount_event_id = excluded.amount_event_id, amount_received_at = excluded.amount_received_at,
           updated_at = now()
  ),
  conversion_deltas as materialized (
    select x.* from folded f cross join lateral private.conversion_facts(f.folded_state, 1) x
    where x.bucket >= p_from and x.bucket < p_to
    union all
    select x.* from folded f cross join lateral private.conversion_facts(f.stored_state, -1) x
    where not p_recompute
  ),
  sums as materialized (
    select f.org_id, f.bucket, f.metric, f.country, f.device_type, f.currency,
           case when grouping(f.campaign_id) = 0 then 'campaign'
                when grouping(f.creative_id) = 0 then 'creative'
                else 'organization' end as entity_type,
           case when grouping(f.campaign_id) = 0 then f.campaign_id::text
                when grouping(f.creative_id) = 0 then f.creative_id
                else f.org_id::text end as entity_id,
           sum(f.amount) as value
    -- summed at the finest grain first: the grouping sets then sort about half as many rows
    -- (5M events: 33 s against 38 s for the whole rollup)
    from (select e.org_id, e.bucket, e.metric, e.country, e.device_type, e.currency, e.campaign_id, e.creative_id,
                 sum(e.amount) as amount
          from (select * from private.event_facts(p_xid_from, p_xid_to, p_from, p_to)
                union all
                select * from conversion_deltas) e
          group by 1, 2, 3, 4, 5, 6, 7, 8) f
    group by grouping sets ((f.org_id, f.bucket, f.metric, f.country, f.device_type, f.currency),
                            (f.org_id, f.bucket, f.metric, f.country, f.device_type, f.currency, f.campaign_id),
                            (f.org_id, f.bucket, f.metric, f.country, f.device_type, f.currency, f.creative_id))
    having (grouping(f.campaign_id) = 1 or f.campaign_id is not null)
       and (grouping(f.creative_id) = 1 or f.creative_id is not null)
    union all
    select f.org_id, f.bucket, f.metric, f.country, f.device_type, f.currency, 'data_asset', a.asset_id::text,
           sum(f.amount)
    from (select * from private.event_facts(p_xid_from, p_xid_to, p_from, p_to) where p_assets
          union all
          select * from conversion_deltas) f
    cross join lateral (select distinct x from unnest(f.asset_ids) as x) as a(asset_id)
    where f.asset_ids <> '{}'
    group by 1, 2, 3, 4, 5, 6, 8
  ),
  keys as (
    select k.*, jsonb_strip_nulls(jsonb_build_object('country', nullif(k.country, ''),
                  'device_type', nullif(k.device_type, ''), 'currency', nullif(k.currency, ''))) as dimensions
    from (select distinct s.org_id, s.metric, s.entity_type, s.entity_id, s.country, s.device_type, s.currency
          from sums s) k
  ),
  known as (
    select k.*, s.id as series_id
    from keys k
    join public.metric_series s
      on s.org_id = k.org_id and s.entity_type = k.entity_type and s.entity_id = k.entity_id
     and s.metric = k.metric and s.granularity = '15m' and s.dimensions = k.dimensions
  ),
  -- No ON CONFLICT: a series another writer (the metrics view) named after this statement's
  -- snapshot fails the run with a unique violation, and the next run counts it, rather than its
  -- points being lost.
  named as (
    insert into public.metric_series (org_id, metric, entity_type, entity_id, granularity, dimensions)
    select k.org_id, k.metric, k.entity_type, k.entity_id, '15m', k.dimensions
    from keys k
    where not exists (select from known n
                      where n.org_id = k.org_id and n.metric = k.metric and n.entity_type = k.entity_type
                        and n.entity_id = k.entity_id and n.dimensions = k.dimensions)
    returning id, org_id, metric, entity_type, entity_id, dimensions
  ),
  series as (
    select n.org_id, n.metric, n.entity_type, n.entity_id, n.country, n.device_type, n.currency, n.series_id,
           false as new_series
    from known n
    union all
    select k.org_id, k.metric, k.entity_type, k.entity_id, k.country, k.device_type, k.currency, n.id, true
    from keys k
    join named n
      on n.org_id = k.org_id and n.metric = k.metric and n.entity_type = k.entity_type
     and n.entity_id = k.entity_id and n.dimensions = k.dimensions
  ),
  deltas as (
    select s.org_id, k.series_id, k.new_series, s.bucket, s.value
    from sums s
    join series k
      on k.org_id = s.org_id and k.metric = s.metric and k.entity_type = s.entity_type and k.entity_id = s.entity_id
     and k.country = s.country and k.device_type = s.device_type and k.currency = s.currency
    where s.value <> 0
  ),
  inserted as (
    insert into public.metric_points (org_id, series_id, bucket_start, value)
    select d.org_id, d.series_id, d.bucket, trim_scale(d.value)
    from deltas d
    where d.new_series
    order by d.org_id, d.series_id, d.bucket
    returning 1
  ),
  added as (
    insert into public.metric_points as p (org_id, series_id, bucket_start, value)
    select d.org_id, d.series_id, d.bucket, trim_scale(d.value)
    from deltas d
    where not d.new_series
    on conflict (org_id, series_id, bucket_start) do update set value = trim_scale(p.value + excluded.value)
    returning p.org_id, p.series_id, p.bucket_start, p.value
  )
  select (select count(*) from inserted) + (select count(*) from added),
         (select count(*) from (select distinct s.org_id, s.bucket from sums s where s.entity_type = 'organization') b),
         array_agg(a.org_id) filter (where a.value = 0),
         array_agg(a.series_id) filter (where a.value = 0),
         array_agg(a.bucket_start) filter (where a.value = 0)
    into points, buckets, v_zero_orgs, v_zero_series, v_zero_buckets
    from added a;

  -- a point whose value netted to zero (a conversion rejected, a spend refunded) is no point
  if v_zero_orgs is not null then
    delete from public.metric_points p
    using unnest(v_zero_orgs, v_zero_series, v_zero_buckets) as z(org_id, series_id, bucket_start)
    where p.org_id = z.org_id and p.series_id = z.series_id and p.bucket_start = z.bucket_start and p.value = 0;
  end if;
end
$$;

-- One incremental step: folds in every event of the transactions between the watermark and the
-- oldest one still running (pg_snapshot_xmin), then moves the watermark, in one transaction.
-- Never two at once (a second caller returns at once with skipped); safe to run from pg-boss, a
-- Worker's scheduled() handler or psql.
create function private.rollup_metrics() returns jsonb
language plpgsql
set search_path = ''
-- JIT compiles the big aggregation at every run and gains nothing back: measured 3.5 s of
-- compilation on a 1.2M-event window that takes 2.4 s without it.
set jit = off
as $$
declare
  v_started timestamptz := clock_timestamp();
  v_from xid8;
  v_to xid8 := pg_snapshot_xmin(pg_current_snapshot());
  v_events bigint;
  v_assets boolean;
  v_applied record;
begin
  if not pg_try_advisory_xact_lock(hashtext('precise.rollup.metrics_15m')) then
    return jsonb_build_object('skipped', true, 'reason', 'another rollup is running');
  end if;
  select s.watermark into v_from from public.rollup_state s where s.name = 'metrics_15m' for update;
  -- the oldest running transaction never goes back, but a restored database might
  v_to := greatest(v_to, v_from);
  select count(*), coalesce(bool_or(e.asset_ids <> '{}'), false) into v_events, v_assets
  from public.events e
  where e.ingest_xid >= v_from and e.ingest_xid < v_to;

  select * into v_applied from private.fold_into_metrics(v_from, v_to, '-infinity', 'infinity', false, v_assets);

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
set jit = off
as $$
declare
  v_below xid8;
  v_log_starts timestamptz;
  v_from timestamptz;
  v_to timestamptz;
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

  delete from public.metric_points p
  using public.metric_series s
  where s.granularity = '15m'
    and s.metric in ('impressions', 'clicks', 'bot_impressions', 'bot_clicks', 'conversions',
                     'conversion_value', 'spend', 'data_usage')
    and p.org_id = s.org_id and p.series_id = s.id and p.bucket_start >= v_from and p.bucket_start < v_to;

  select coalesce(bool_or(e.asset_ids <> '{}'), false) into v_assets
  from public.events e
  where e.occurred_at >= v_from and e.occurred_at < v_to and e.ingest_xid < v_below;

  select * into v_applied from private.fold_into_metrics('0', v_below, v_from, v_to, true, v_assets);
  return jsonb_build_object('buckets', v_applied.buckets, 'rows', v_applied.points, 'from', v_from, 'to', v_to);
end
$$;

revoke all on function
  private.conversion_events(xid8, xid8, timestamptz, timestamptz),
  private.event_facts(xid8, xid8, timestamptz, timestamptz),
  private.folded_conversions(xid8, xid8, timestamptz, timestamptz, boolean),
  private.conversion_facts(public.rollup_conversions, integer),
  private.fold_into_metrics(xid8, xid8, timestamptz, timestamptz, boolean, boolean),
  private.rollup_metrics(),
  private.rollup_metrics_between(timestamptz, timestamptz)
  from public;
grant execute on function
  private.conversion_events(xid8, xid8, timestamptz, timestamptz),
  private.event_facts(xid8, xid8, timestamptz, timestamptz),
  private.folded_conversions(xid8, xid8, timestamptz, timestamptz, boolean),
  private.conversion_facts(public.rollup_conversions, integer),
  private.fold_into_metrics(xid8, xid8, timestamptz, timestamptz, boolean, boolean),
  private.rollup_metrics(),
  private.rollup_metrics_between(timestamptz, timestamptz)
  to service_role;

-- ---------------------------------------------------------------------------------------------
-- Reading: GET /v1/metrics
-- ---------------------------------------------------------------------------------------------

-- Whether an organization may read an entity's metrics. Campaigns: its own. Data assets: its own,
-- or granted to it (any grant, in force or not: the metrics are its own history of the asset).
-- Creatives are free text on events: whatever its own metrics hold. Ids are compared as text,
-- within the org's rows, so that an id that is not a UUID is simply not found.
create function private.metric_entity_visible(p_org_id uuid, p_entity_type text, p_entity_id text)
returns boolean
language sql
stable
set search_path = ''
as $$
  select case p_entity_type
    when 'organization' then p_entity_id = p_org_id::text
    when 'creative' then true
    when 'campaign' then exists (
      select from public.campaigns c where c.org_id = p_org_id and c.id::text = p_entity_id)
    when 'data_asset' then exists (
      select from public.data_assets a where a.org_id = p_org_id and a.id::text = p_entity_id)
      or exists (
        select from public.permissions g
        join public.data_assets a on a.org_id = g.org_id and (g.resource_id is null or a.id = g.resource_id)
        where g.grantee_type = 'organization' and g.grantee_id = p_org_id and g.resource_type = 'data_asset'
          and a.id::text = p_entity_id)
    else false
  end
$$;

-- Whether AT TIME ZONE reads p_name (an exception block: pg_timezone_names reads every zone file,
-- some 50 ms a call).
create function private.time_zone_known(p_name text)
returns boolean
language plpgsql
stable
set search_path = ''
as $$
begin
  perform now() at time zone p_name;
  return true;
exception when invalid_parameter_value then
  return false;
end
$$;

revoke all on function private.metric_entity_visible(uuid, text, text), private.time_zone_known(text) from public;
grant execute on function private.metric_entity_visible(uuid, text, text), private.time_zone_known(text) to service_role;


-- The sums of one entity's 15-minute points into hours, days, weeks or months of an IANA time
-- zone (exact: every zone's offset is a multiple of 15 minutes), every local bucket from p_from to
-- p_to listed (empty ones too, so a chart can draw them) and stepped in local wall time so that
-- days stay days across daylight-saving changes. One function for every driver: SQL on Postgres
-- and PGlite, supabase-js rpc on a Supabase edge deployment (service role only). One jsonb value,
-- not a set of rows: PostgREST cuts sets at its max_rows (1,000 by default). It refuses what it
-- cannot answer:
--   * an entity the caller may not see: another organization, another org's campaign, a data
--     asset neither owned nor granted; answered {"refused": "entity_id"} (the API's 404), never
--     a series of zeros that would confirm nothing and hide the mistake;
--   * a time zone Postgres does not know (its tz database may be older than the runtime's):
--     {"refused": "tz"} (the API's 400), instead of an error the rpc path would turn into a 503;
--   * amounts without a currency: their own currency, '' in "currencies", so that they are never
--     added to EUR amounts unnoticed; p_currency = '' selects them.
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
language plpgsql
stable
set search_path = ''
as $$
begin
  if not private.metric_entity_visible(p_org_id, p_entity_type, p_entity_id) then
    return jsonb_build_object('refused', 'entity_id');
  end if;
  if not private.time_zone_known(p_time_zone) then
    return jsonb_build_object('refused', 'tz');
  end if;
  return (
    with chosen as (
      -- amounts restricted to the currency asked for ('' = none); counters have no currency
      select s.id, s.metric,
             case when s.metric in ('spend', 'conversion_value') then coalesce(s.dimensions ->> 'currency', '') end as currency
      from public.metric_series s
      where s.org_id = p_org_id and s.entity_type = p_entity_type and s.entity_id = p_entity_id
        and s.granularity = '15m' and s.metric = any (p_metrics)
        and (p_currency is null or s.metric not in ('spend', 'conversion_value')
             or coalesce(s.dimensions ->> 'currency', '') = p_currency)
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
      -- the currencies of the amounts summed ('' for none), so that the caller can refuse to add USD to EUR
      'currencies', coalesce((select jsonb_agg(distinct p.currency) from points p where p.currency is not null), '[]'),
      -- one array per bucket and metric: local time, offset in minutes, metric (or null), sum
      'rows', coalesce((
        select jsonb_agg(jsonb_build_array(
                 to_char(b.local_bucket, 'YYYY-MM-DD"T"HH24:MI:SS'),
                 (extract(epoch from b.local_bucket - ((b.local_bucket at time zone p_time_zone) at time zone 'UTC')) / 60)::integer,
                 v.metric, v.value::text) order by b.local_bucket, v.metric)
        from buckets b
        left join summed v on v.local_bucket = b.local_bucket), '[]'))
  );
end
$$;
comment on function public.metric_buckets(uuid, text, text, text[], timestamptz, timestamptz, text, text, text) is
  'GET /v1/metrics: one entity''s metrics summed into local hours, days, weeks or months, or {"refused": field} (backend only).';
revoke all on function public.metric_buckets(uuid, text, text, text[], timestamptz, timestamptz, text, text, text)
  from public, anon, authenticated;
grant execute on function public.metric_buckets(uuid, text, text, text[], timestamptz, timestamptz, text, text, text)
  to service_role;
