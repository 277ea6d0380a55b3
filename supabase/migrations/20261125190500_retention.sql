-- Retention of raw events, and partition upkeep, under bounded locks. Whole daily partitions
-- older than the cutoff are dropped (never a DELETE, which would bloat the table and cost time in
-- proportion to the rows), once every event in them is in the metrics. Metrics are untouched:
-- reports keep their history after the raw log is gone.
--
-- Detaching a partition takes an ACCESS EXCLUSIVE lock on public.events: while it waits for a
-- long transaction (a rollup, an open ingest batch, a report), every new insert queues behind
-- it. So the job (scheduled/jobs/partition-upkeep.ts) runs these steps, each its own short
-- transaction:
--   select private.upkeep_event_partitions(from, to);            -- create ahead, carve strays
--   select private.rollup_metrics();                             -- fold pending events in
--   select private.event_partitions_before(cutoff);              -- the days to drop
--   select private.drop_event_partition(name, cutoff);           -- one per day, ~2 s lock wait
--   select private.prune_event_id_ledger(cutoff);                -- the ledger, 400-day floor

-- Days that landed in events_default (an occurred_at far in the past or the future, before its
-- partition existed) get their own daily partition at upkeep, so that retention drops them by
-- whole partitions like any other day, and time-bounded queries prune them.
create function private.carve_default_event_days() returns integer
language plpgsql
set search_path = ''
as $$
declare
  v_day date;
  v_created integer := 0;
begin
  for v_day in
    select distinct (e.occurred_at at time zone 'UTC')::date from public.events_default e order by 1
  loop
    v_created := v_created + private.ensure_event_partitions(v_day, v_day);
  end loop;
  return v_created;
end
$$;

-- How old an occurred_at the edge accepts: LIMITS.maxAgeMs in core/events/limits.ts (a test
-- checks that they agree).
create function private.event_max_age() returns interval
language sql
immutable
set search_path = ''
as $$ select interval '400 days' $$;

-- The daily partitions of days before p_cutoff, oldest first.
create function private.event_partitions_before(p_cutoff date) returns setof text
language plpgsql
stable
set search_path = ''
as $$
begin
  if p_cutoff is null or p_cutoff > (now() at time zone 'UTC')::date then
    raise exception 'event_partitions_before: the cutoff must be a past date (got %)', p_cutoff
      using errcode = 'invalid_parameter_value';
  end if;
  return query
    select c.relname::text
    from pg_catalog.pg_inherits i
    join pg_catalog.pg_class c on c.oid = i.inhrelid
    join pg_catalog.pg_namespace n on n.oid = c.relnamespace
    where i.inhparent = 'public.events'::regclass and n.nspname = 'public'
      and c.relname ~ '^events_p\d{8}$'
      and to_date(substr(c.relname, 9), 'YYYYMMDD') < p_cutoff
    order by c.relname;
end
$$;

-- Drops one daily partition of a day before p_cutoff, in the caller's (short) transaction.
-- Returns {"status": ...}:
--   dropped    gone, and the rollup's log_starts_at moved past its day (a range recompute of a
--              dropped day is refused rather than rebuilt from nothing);
--   postponed  it holds events not in the metrics yet (the next rollup folds them in);
--   locked     the lock on events was not granted within p_lock_timeout_ms (a long transaction
--              holds events): nothing done, try at the next run; ingestion waited at most that;
--   busy       a rollup kept running for p_rollup_wait_ms (waiting for it holds up no insert);
--   absent     no such partition (already dropped).
-- The lock timeout is the price an insert may pay once per run: 2 s by default, well below
-- an ingest client's timeout, and long enough to get the lock between ordinary short batches.
create function private.drop_event_partition(
  p_partition text,
  p_cutoff date,
  p_lock_timeout_ms integer default 2000,
  p_rollup_wait_ms integer default 60000
) returns jsonb
language plpgsql
set search_path = ''
-- restored when the function returns, whatever it sets below
set lock_timeout = '2s'
as $$
declare
  v_day date;
  v_watermark xid8;
  v_pending boolean;
  v_waiting_for text := 'rollup';
begin
  if p_partition is null or p_partition !~ '^events_p\d{8}$' then
    raise exception 'drop_event_partition: % is not a daily partition of events', p_partition
      using errcode = 'invalid_parameter_value';
  end if;
  v_day := to_date(substr(p_partition, 9), 'YYYYMMDD');
  if p_cutoff is null or p_cutoff > (now() at time zone 'UTC')::date or v_day >= p_cutoff then
    raise exception 'drop_event_partition: % is not before a past cutoff (got %)', p_partition, p_cutoff
      using errcode = 'invalid_parameter_value';
  end if;
  if coalesce(p_lock_timeout_ms, 0) < 1 or coalesce(p_rollup_wait_ms, 0) < 1 then
    raise exception 'drop_event_partition: timeouts must be positive milliseconds'
      using errcode = 'invalid_parameter_value';
  end if;

  begin
    -- No rollup reads events meanwhile (its ACCESS SHARE lock would make us time out); the
    -- wait for this advisory lock holds up no insert.
    perform pg_catalog.set_config('lock_timeout', p_rollup_wait_ms || 'ms', true);
    perform pg_advisory_xact_lock(hashtext('precise.rollup.metrics_15m'));
    -- From here on every wait queues inserts behind it: keep it short.
    v_waiting_for := 'events';
    perform pg_catalog.set_config('lock_timeout', p_lock_timeout_ms || 'ms', true);
    perform pg_advisory_xact_lock(hashtext('precise.events.partitions'));
    if p_partition not in (select private.event_partitions_before(p_cutoff)) then
      return jsonb_build_object('partition', p_partition, 'status', 'absent');
    end if;
    -- Locked before the check, so no event can land in it between the check and the drop.
    lock table only public.events in access exclusive mode;
    execute format('lock table public.%I in access exclusive mode', p_partition);
    select s.watermark into v_watermark from public.rollup_state s where s.name = 'metrics_15m';
    execute format('select exists (select 1 from public.%I e where e.ingest_xid >= $1)', p_partition)
      using v_watermark into v_pending;
    if v_pending then
      return jsonb_build_object('partition', p_partition, 'status', 'postponed');
    end if;
    execute format('alter table public.events detach partition public.%I', p_partition);
    execute format('drop table public.%I', p_partition);
  exception when lock_not_available then
    return jsonb_build_object('partition', p_partition,
      'status', case v_waiting_for when 'rollup' then 'busy' else 'locked' end);
  end;
  update public.rollup_state s
     set properties = s.properties || jsonb_build_object('log_starts_at',
           greatest(coalesce((s.properties ->> 'log_starts_at')::timestamptz, '-infinity'),
                    (v_day + 1)::timestamp at time zone 'UTC')),
         updated_at = now()
   where s.name = 'metrics_15m';
  return jsonb_build_object('partition', p_partition, 'status', 'dropped');
end
$$;

-- Partition upkeep under the same bound: creating or carving out a partition locks events and
-- events_default as a detach does. A run that cannot get the lock in time creates nothing and
-- says so ("locked"); the next run catches up (partitions are made 14 days ahead, and an event
-- of a day without one waits in events_default until its day is carved out).
create function private.upkeep_event_partitions(p_from date, p_to date, p_lock_timeout_ms integer default 2000)
returns jsonb
language plpgsql
set search_path = ''
set lock_timeout = '2s'
as $$
declare
  v_created integer;
begin
  if coalesce(p_lock_timeout_ms, 0) < 1 then
    raise exception 'upkeep_event_partitions: the lock timeout must be positive milliseconds'
      using errcode = 'invalid_parameter_value';
  end if;
  perform pg_catalog.set_config('lock_timeout', p_lock_timeout_ms || 'ms', true);
  v_created := private.ensure_event_partitions(p_from, p_to);
  return jsonb_build_object('created', v_created, 'carved', private.carve_default_event_days(), 'locked', false);
exception when lock_not_available then
  return jsonb_build_object('created', 0, 'carved', 0, 'locked', true);
end
$$;

-- Prunes the ledger of sender-chosen event ids. An entry stays while an event with its
-- occurred_at could still be accepted (event_max_age, plus a day for clocks): dropping it
-- earlier would let a resend of an event whose partition retention dropped be stored and
-- counted again. So the ledger outlives a shorter raw-event retention, by design.
create function private.prune_event_id_ledger(p_cutoff date) returns bigint
language plpgsql
set search_path = ''
as $$
declare
  v_pruned bigint;
begin
  if p_cutoff is null or p_cutoff > (now() at time zone 'UTC')::date then
    raise exception 'prune_event_id_ledger: the cutoff must be a past date (got %)', p_cutoff
      using errcode = 'invalid_parameter_value';
  end if;
  delete from public.event_ids e
  where e.occurred_at < least(p_cutoff::timestamp at time zone 'UTC',
                              now() - private.event_max_age() - interval '1 day');
  get diagnostics v_pruned = row_count;
  return v_pruned;
end
$$;

revoke all on function private.carve_default_event_days(), private.event_max_age(),
  private.event_partitions_before(date), private.drop_event_partition(text, date, integer, integer),
  private.prune_event_id_ledger(date), private.upkeep_event_partitions(date, date, integer) from public;
grant execute on function private.carve_default_event_days(), private.event_max_age(),
  private.event_partitions_before(date), private.drop_event_partition(text, date, integer, integer),
  private.prune_event_id_ledger(date), private.upkeep_event_partitions(date, date, integer) to service_role;
