-- Incremental rollup of events into metrics, at the stored grain of 15-minute UTC buckets
-- (every IANA time zone's hours and days, UTC+05:45 and daylight-saving days included, are
-- exact sums of 15-minute buckets).
--
-- The watermark is the inserting transaction's id, not a timestamp: received_at is set by the
-- edge and a row can commit long after it (queues, replays), so a time watermark would miss it.
-- Every transaction with an id below pg_snapshot_xmin(pg_current_snapshot()) has finished, so
-- rows below that mark can no longer appear. A run recomputes, absolutely, every bucket that
-- rows of the new window touch (late events fold into their old bucket), so rerunning a window
-- leaves the same rows, and its cost follows the new rows, not the size of the log.

alter table public.events add column ingest_xid xid8 not null default pg_current_xact_id();
create index events_ingest_xid_idx on public.events (ingest_xid);
-- the rollup reads whole buckets by time
create index events_occurred_brin on public.events using brin (occurred_at);

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
  properties jsonb not null default '{}' check (jsonb_typeof(properties) = 'object'),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
comment on table public.rollup_state is 'Watermarks and last-run figures of the rollup jobs (backend only).';
alter table public.rollup_state enable row level security;
revoke all on table public.rollup_state from anon, authenticated;
grant all on table public.rollup_state to service_role;
insert into public.rollup_state (name) values ('metrics_15m');

create function private.bucket_15m(p_at timestamptz) returns timestamptz
language sql
immutable
set search_path = ''
as $$
  select date_bin('15 minutes', p_at, timestamptz '2000-01-01 00:00:00+00')
$$;

-- The metrics this rollup owns (it deletes and rewrites them in the buckets it recomputes).
create function private.rollup_metric_names() returns text[]
language sql
immutable
set search_path = ''
as $$
  select array['impressions', 'clicks', 'bot_impressions', 'bot_clicks', 'conversions',
               'conversion_value', 'spend', 'data_usage']
$$;

-- Recomputes the given (org_id, bucket_start) pairs from the log. Counters per organization,
-- campaign, creative and data asset, with country and device type as dimensions (currency too
-- for amounts). Bots are counted apart and never in the billable counters. A conversion (type
-- conversion, keyed by click_id and txid, else by event_id) counts in the bucket of its first
-- event, and only while its latest status is approved (a missing status means approved), so a
-- later rejection moves it out.
create function private.recompute_metric_buckets(p_buckets jsonb) returns bigint
language plpgsql
set search_path = ''
as $$
declare
  v_rows bigint;
begin
  create temporary table if not exists pg_temp.rollup_buckets (org_id uuid, bucket_start timestamptz) on commit drop;
  truncate pg_temp.rollup_buckets;
  insert into pg_temp.rollup_buckets
  select distinct b.org_id, b.bucket_start
  from jsonb_to_recordset(p_buckets) as b(org_id uuid, bucket_start timestamptz);
  analyze pg_temp.rollup_buckets;

  delete from public.metrics m
  using pg_temp.rollup_buckets b
  where m.org_id = b.org_id and m.bucket_start = b.bucket_start and m.granularity = '15m'
    and m.metric = any (private.rollup_metric_names());

  -- A day at a time (one partition each, pruned at run time), then a hash match on
  -- (org, bucket): never a range probe per bucket.
  with days as (
    select distinct date_trunc('day', b.bucket_start, 'UTC') as day from pg_temp.rollup_buckets b
  ),
  scoped as (
    select e.*,
           private.bucket_15m(e.occurred_at) as bucket,
           coalesce((e.context ->> 'bot')::boolean, false) as is_bot,
           e.context -> 'geo' ->> 'country' as country,
           e.context -> 'device' ->> 'type' as device_type
    from days d
    cross join lateral (
      select * from public.events x
      where x.occurred_at >= d.day and x.occurred_at < d.day + interval '1 day'
    ) e
    join pg_temp.rollup_buckets b on b.org_id = e.org_id and b.bucket_start = private.bucket_15m(e.occurred_at)
  ),
  counted as (
    select s.org_id, s.bucket, s.country, s.device_type, s.campaign_id, s.creative_id, s.asset_ids,
           m.metric, m.amount, m.currency
    from scoped s
    cross join lateral (values
      (case
         when s.type = 'impression' then case when s.is_bot then 'bot_impressions' else 'impressions' end
         when s.type = 'click' then case when s.is_bot then 'bot_clicks' else 'clicks' end
         when s.type = 'data_usage' and not s.is_bot then 'data_usage'
       end, 1::numeric, null::text),
      (case when s.type = 'spend' and s.value is not null then 'spend' end, s.value, s.currency)
    ) as m(metric, amount, currency)
    where m.metric is not null
  ),
  -- conversions whose first event lies in a recomputed bucket, with their latest status
  conversion_keys as (
    select distinct s.org_id, s.click_id, s.properties ->> 'txid' as txid, s.event_id as lone_event_id
    from scoped s
    where s.type = 'conversion'
  ),
  -- every event of those conversions: by click_id (indexed) and txid, or the lone event itself
  conversion_events as (
    select e.*, coalesce(e.click_id || ' ' || coalesce(e.properties ->> 'txid', ''), e.event_id) as conversion_key,
           e.context -> 'geo' ->> 'country' as country,
           e.context -> 'device' ->> 'type' as device_type
    from (select distinct org_id, click_id, txid from conversion_keys where click_id is not null) k
    join public.events e
      on e.org_id = k.org_id and e.click_id = k.click_id and e.type = 'conversion'
     and (e.properties ->> 'txid') is not distinct from k.txid
    union all
    select s.*, s.event_id,
           s.context -> 'geo' ->> 'country', s.context -> 'device' ->> 'type'
    from public.events s
    join conversion_keys k on k.click_id is null and s.org_id = k.org_id and s.event_id = k.lone_event_id
    where s.type = 'conversion'
  ),
  -- where and for what the conversion happened: its first event
  conversion_firsts as (
    select distinct on (c.org_id, c.conversion_key)
           c.org_id, c.conversion_key, c.occurred_at as first_at, c.country, c.device_type,
           c.campaign_id, c.creative_id, c.asset_ids
    from conversion_events c
    order by c.org_id, c.conversion_key, c.occurred_at, c.received_at
  ),
  -- what it is now: its latest status, and its latest amount
  conversion_latest as (
    select distinct on (c.org_id, c.conversion_key)
           c.org_id, c.conversion_key, coalesce(c.status, 'approved') as latest_status
    from conversion_events c
    order by c.org_id, c.conversion_key, c.received_at desc, c.event_id desc
  ),
  conversion_amounts as (
    select distinct on (c.org_id, c.conversion_key)
           c.org_id, c.conversion_key, c.value as amount, c.currency
    from conversion_events c
    where c.value is not null
    order by c.org_id, c.conversion_key, c.received_at desc, c.event_id desc
  ),
  conversions as (
    select f.*, l.latest_status, a.amount, a.currency
    from conversion_firsts f
    join conversion_latest l on l.org_id = f.org_id and l.conversion_key = f.conversion_key
    left join conversion_amounts a on a.org_id = f.org_id and a.conversion_key = f.conversion_key
  ),
  converted as (
    select c.org_id, private.bucket_15m(c.first_at) as bucket, c.country, c.device_type, c.campaign_id,
           c.creative_id, c.asset_ids, m.metric, m.amount, m.currency
    from conversions c
    join pg_temp.rollup_buckets b on b.org_id = c.org_id and b.bucket_start = private.bucket_15m(c.first_at)
    cross join lateral (values
      ('conversions', 1::numeric, null::text),
      (case when c.amount is not null then 'conversion_value' end, c.amount, c.currency)
    ) as m(metric, amount, currency)
    where c.latest_status = 'approved' and m.metric is not null
  ),
  facts as (
    select * from counted
    union all
    select * from converted
  ),
  per_entity as (
    select f.*, 'organization' as entity_type, f.org_id::text as entity_id from facts f
    union all
    select f.*, 'campaign', f.campaign_id::text from facts f where f.campaign_id is not null
    union all
    select f.*, 'creative', f.creative_id from facts f where f.creative_id is not null
    union all
    select f.*, 'data_asset', a.asset_id::text from facts f cross join unnest(f.asset_ids) as a(asset_id)
  )
  insert into public.metrics (org_id, metric, entity_type, entity_id, granularity, bucket_start, dimensions, value)
  select p.org_id, p.metric, p.entity_type, p.entity_id, '15m', p.bucket,
         jsonb_strip_nulls(jsonb_build_object('country', p.country, 'device_type', p.device_type, 'currency', p.currency)),
         sum(p.amount)
  from per_entity p
  group by p.org_id, p.metric, p.entity_type, p.entity_id, p.bucket, p.country, p.device_type, p.currency;
  get diagnostics v_rows = row_count;
  return v_rows;
end
$$;

-- One incremental step. Never two at once (a second caller returns at once with skipped);
-- safe to run from pg-boss, a Worker's scheduled() handler or psql.
create function private.rollup_metrics() returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_started timestamptz := clock_timestamp();
  v_from xid8;
  v_to xid8 := pg_snapshot_xmin(pg_current_snapshot());
  v_events bigint;
  v_buckets jsonb;
  v_count integer;
  v_rows bigint := 0;
begin
  if not pg_try_advisory_xact_lock(hashtext('precise.rollup.metrics_15m')) then
    return jsonb_build_object('skipped', true, 'reason', 'another rollup is running');
  end if;
  select s.watermark into v_from from public.rollup_state s where s.name = 'metrics_15m' for update;
  -- the oldest running transaction never goes back, but a restored database might
  v_to := greatest(v_to, v_from);

  -- the buckets the new rows touch, and the first buckets of conversions they change
  with fresh as (
    select e.org_id, e.occurred_at, e.type, e.click_id, e.event_id, e.properties
    from public.events e
    where e.ingest_xid >= v_from and e.ingest_xid < v_to
  ),
  touched as (
    select f.org_id, private.bucket_15m(f.occurred_at) as bucket_start from fresh f
    union
    select f.org_id, private.bucket_15m(min(e.occurred_at))
    from fresh f
    join public.events e
      on e.org_id = f.org_id and e.type = 'conversion' and e.click_id = f.click_id
     and (e.properties ->> 'txid') is not distinct from (f.properties ->> 'txid')
    where f.type = 'conversion' and f.click_id is not null
    group by f.org_id, f.click_id, f.properties ->> 'txid'
  )
  select (select count(*) from fresh), coalesce(jsonb_agg(t), '[]'), count(t.*)
    into v_events, v_buckets, v_count
  from touched t;

  if v_count > 0 then
    v_rows := private.recompute_metric_buckets(v_buckets);
  end if;

  update public.rollup_state s
     set watermark = v_to,
         last_run_at = v_started,
         last_duration_ms = (extract(epoch from clock_timestamp() - v_started) * 1000)::integer,
         last_events = v_events,
         last_buckets = v_count,
         last_rows = v_rows,
         runs = s.runs + 1,
         updated_at = now()
   where s.name = 'metrics_15m';

  return jsonb_build_object('skipped', false, 'events', v_events, 'buckets', v_count, 'rows', v_rows,
                            'watermark', v_to::text);
end
$$;

-- Recomputes every bucket between two times, whatever the watermark says (a backfill, or a
-- repair); idempotent like the incremental step.
create function private.rollup_metrics_between(p_from timestamptz, p_to timestamptz) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_buckets jsonb;
  v_count integer;
  v_rows bigint := 0;
begin
  perform pg_advisory_xact_lock(hashtext('precise.rollup.metrics_15m'));
  select coalesce(jsonb_agg(t), '[]'), count(*) into v_buckets, v_count
  from (
    select distinct e.org_id, private.bucket_15m(e.occurred_at) as bucket_start
    from public.events e
    where e.occurred_at >= p_from and e.occurred_at < p_to
    union
    select distinct m.org_id, m.bucket_start
    from public.metrics m
    where m.granularity = '15m' and m.bucket_start >= p_from and m.bucket_start < p_to
  ) t;
  if v_count > 0 then
    v_rows := private.recompute_metric_buckets(v_buckets);
  end if;
  return jsonb_build_object('buckets', v_count, 'rows', v_rows);
end
$$;

revoke all on function private.bucket_15m(timestamptz) from public;
revoke all on function private.rollup_metric_names() from public;
revoke all on function private.recompute_metric_buckets(jsonb) from public;
revoke all on function private.rollup_metrics() from public;
revoke all on function private.rollup_metrics_between(timestamptz, timestamptz) from public;
grant execute on function private.bucket_15m(timestamptz), private.rollup_metric_names(),
  private.recompute_metric_buckets(jsonb), private.rollup_metrics(),
  private.rollup_metrics_between(timestamptz, timestamptz) to service_role;
