-- The event log, the generic metrics time series, and the failed-event store.
--
-- events is append-only and range-partitioned by occurred_at, one partition per UTC day, so
-- that retention drops whole partitions and time-bounded queries prune to a few days.
-- org_id leads every key (the schema can be distributed by org without redesign).
-- No foreign keys on the log: ingestion must not pay a lookup per row, and the log outlives
-- the entities it mentions.

create table public.events (
  org_id uuid not null,
  event_id text not null check (length(event_id) between 1 and 128),
  -- impression, click, conversion, data_usage, creative_view, or any other snake_case type
  type text not null check (type ~ '^[a-z][a-z0-9_]{0,62}$'),
  occurred_at timestamptz not null,
  received_at timestamptz not null default now(),
  campaign_id uuid,
  creative_id text check (length(creative_id) <= 128),
  asset_ids uuid[] not null default '{}',
  user_key text check (length(user_key) <= 256),
  click_id text check (length(click_id) <= 128),
  value numeric,
  currency text check (currency ~ '^[A-Z]{3}$'),
  status text check (status ~ '^[a-z][a-z0-9_]{0,31}$'),
  properties jsonb not null default '{}' check (jsonb_typeof(properties) = 'object'),
  -- geo, device, bot flag, truncated or hashed IP, consent: never a raw IP
  context jsonb not null default '{}' check (jsonb_typeof(context) = 'object'),
  -- Dedup on (org_id, event_id); Postgres requires the partition key in a unique key.
  primary key (org_id, event_id, occurred_at)
) partition by range (occurred_at);

comment on table public.events is
  'Append-only event log, one partition per UTC day (events_pYYYYMMDD) plus events_default for stray times.';

create index events_campaign_time_idx on public.events (org_id, campaign_id, occurred_at);
create index events_creative_time_idx on public.events (org_id, creative_id, occurred_at)
  where creative_id is not null;
create index events_click_idx on public.events (org_id, click_id) where click_id is not null;
create index events_user_time_idx on public.events (org_id, user_key, occurred_at)
  where user_key is not null;
-- Arrival order: rollups read what arrived since their watermark.
create index events_received_brin on public.events using brin (received_at);

-- Rows whose day has no partition yet land here; ensure_event_partitions moves them out.
create table public.events_default partition of public.events default;

-- Append-only: no UPDATE ever, DELETE only for an explicit erasure or partition upkeep
-- (which sets precise.allow_event_delete for its own transaction). Retention drops partitions.
create function private.refuse_event_change() returns trigger
language plpgsql
set search_path = ''
as $$
begin
  if tg_op = 'DELETE' and current_setting('precise.allow_event_delete', true) = 'on' then
    return old;
  end if;
  raise exception 'events are append-only (% refused)', tg_op
    using errcode = 'insufficient_privilege',
          hint = 'record a new event instead, e.g. a status change';
end
$$;
revoke all on function private.refuse_event_change() from public;

create trigger refuse_event_change before update or delete on public.events
  for each row execute function private.refuse_event_change();
create trigger refuse_event_truncate before truncate on public.events
  for each statement execute function private.refuse_event_change();

-- Creates (or, when events_default already holds rows for it, carves out) the partition of
-- one UTC day, and locks it down: a partition queried directly would bypass the parent's
-- policies, so it gets RLS with no policy and no grants for API roles.
create function private.create_event_partition(p_day date) returns boolean
language plpgsql
set search_path = ''
as $$
declare
  v_name text := 'events_p' || to_char(p_day, 'YYYYMMDD');
  v_lo timestamptz := p_day::timestamp at time zone 'UTC';
  v_hi timestamptz := (p_day + 1)::timestamp at time zone 'UTC';
begin
  if to_regclass('public.' || v_name) is not null then
    return false;
  end if;

  if exists (select 1 from public.events_default where occurred_at >= v_lo and occurred_at < v_hi) then
    execute format('create table public.%I (like public.events including defaults including constraints)', v_name);
    perform set_config('precise.allow_event_delete', 'on', true);
    execute format(
      'with moved as (delete from public.events_default where occurred_at >= $1 and occurred_at < $2 returning *)
       insert into public.%I select * from moved', v_name)
      using v_lo, v_hi;
    perform set_config('precise.allow_event_delete', 'off', true);
    execute format('alter table public.events attach partition public.%I for values from (%L) to (%L)',
      v_name, v_lo, v_hi);
  else
    execute format('create table public.%I partition of public.events for values from (%L) to (%L)',
      v_name, v_lo, v_hi);
  end if;

  execute format('alter table public.%I enable row level security', v_name);
  execute format('revoke all on table public.%I from anon, authenticated', v_name);
  return true;
end
$$;

-- Makes sure a partition exists for every UTC day from p_from to p_to (inclusive); returns
-- how many it created. Safe to call concurrently and repeatedly (a scheduled job calls it
-- daily; ingestion never waits for it because events_default catches stray days).
create function private.ensure_event_partitions(
  p_from date default ((now() at time zone 'UTC')::date - 1),
  p_to date default ((now() at time zone 'UTC')::date + 14)
) returns integer
language plpgsql
set search_path = ''
as $$
declare
  v_day date;
  v_created integer := 0;
begin
  if p_from is null or p_to is null or p_to < p_from then
    raise exception 'ensure_event_partitions: bad range % .. %', p_from, p_to
      using errcode = 'invalid_parameter_value';
  end if;
  if p_to - p_from > 3700 then
    raise exception 'ensure_event_partitions: at most 3700 days at once (asked %)', p_to - p_from
      using errcode = 'invalid_parameter_value';
  end if;

  perform pg_advisory_xact_lock(hashtext('precise.events.partitions'));
  for v_day in select d::date from generate_series(p_from, p_to, interval '1 day') as d loop
    if private.create_event_partition(v_day) then
      v_created := v_created + 1;
    end if;
  end loop;
  return v_created;
end
$$;
revoke all on function private.create_event_partition(date) from public;
revoke all on function private.ensure_event_partitions(date, date) from public;
grant execute on function private.ensure_event_partitions(date, date) to service_role;

alter table public.events_default enable row level security;
select private.ensure_event_partitions();

-- Generic time series: any metric, for any entity, at any granularity, with dimensions.
-- Jobs upsert on the primary key, so a rerun rewrites the same row (idempotent).
create table public.metrics (
  org_id uuid not null,
  metric text not null check (metric ~ '^[a-z][a-z0-9_]{0,62}$'),
  entity_type text not null check (entity_type ~ '^[a-z][a-z0-9_]{0,62}$'),
  entity_id text not null check (length(entity_id) between 1 and 128),
  granularity text not null check (granularity in ('15m', 'hour', 'day', 'week', 'month')),
  bucket_start timestamptz not null,
  -- e.g. {"country": "DE", "device_type": "mobile", "currency": "EUR"}; {} when none
  dimensions jsonb not null default '{}' check (jsonb_typeof(dimensions) = 'object'),
  value numeric not null,
  properties jsonb not null default '{}' check (jsonb_typeof(properties) = 'object'),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  primary key (org_id, entity_type, entity_id, metric, granularity, bucket_start, dimensions)
);
create index metrics_org_metric_time_idx on public.metrics (org_id, metric, granularity, bucket_start);

-- Events that could be tied to an org but were refused: kept with the reason and the raw
-- payload (bounded) so an operator can fix and replay them. Nothing is dropped silently.
create table public.failed_events (
  id uuid primary key default gen_random_uuid(),
  org_id uuid not null references public.organizations (id) on delete cascade,
  -- pixel, beacon, batch, postback, webhook, queue, ...
  source text not null check (source ~ '^[a-z][a-z0-9_]{0,31}$'),
  reason_code text not null check (reason_code ~ '^[a-z][a-z0-9_]{0,63}$'),
  reason text not null,
  field text,
  payload text not null check (octet_length(payload) <= 65536),
  payload_truncated boolean not null default false,
  received_at timestamptz not null default now(),
  replay_count integer not null default 0,
  replayed_at timestamptz,
  -- the outcome of the last replay, e.g. {"ok": true, "event_id": "..."}
  replay_result jsonb,
  properties jsonb not null default '{}' check (jsonb_typeof(properties) = 'object'),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
create index failed_events_org_time_idx on public.failed_events (org_id, received_at desc);
create index failed_events_pending_idx on public.failed_events (org_id, received_at)
  where replayed_at is null;

create trigger touch_updated_at before update on public.metrics
  for each row execute function private.touch_updated_at();
create trigger touch_updated_at before update on public.failed_events
  for each row execute function private.touch_updated_at();

-- Members read their org's log, metrics and failures; only the backend (service_role) writes.
alter table public.events enable row level security;
create policy "events: members read" on public.events
  for select to authenticated using (org_id in (select private.user_org_ids()));
alter table public.metrics enable row level security;
create policy "metrics: members read" on public.metrics
  for select to authenticated using (org_id in (select private.user_org_ids()));
alter table public.failed_events enable row level security;
create policy "failed_events: members read" on public.failed_events
  for select to authenticated using (org_id in (select private.user_org_ids()));

revoke all on table public.events, public.events_default, public.metrics, public.failed_events
  from anon, authenticated;
grant select on table public.events, public.metrics, public.failed_events to authenticated;
grant all on table public.events, public.metrics, public.failed_events to service_role;
