-- Retention waits for every reader of the log, and prunes the attribution touch store.
--
-- The log has three readers, each with its own arrival watermark over events.ingest_xid in
-- rollup_state: the rollup ('metrics_15m'), attribution ('attribution', private.attribution_step)
-- and creative fatigue ('creative_fatigue', private.fatigue_map_step). A daily partition is
-- dropped only once every one of them has read all its events (before, only the rollup's
-- watermark was checked: a day attribution or fatigue had not read could go unread).
--
-- Why the check cannot race a reader. Every reader reads events and moves its watermark in one
-- transaction. The drop holds the advisory lock of each known reader (the one its steps and range
-- rebuilds take), so none of them runs meanwhile and their watermarks cannot move under the
-- check. Whatever reader else: its read holds ACCESS SHARE on events until it commits, so the
-- drop's ACCESS EXCLUSIVE lock is granted only once it has committed its watermark with its read,
-- and the watermarks are read after the lock, in a snapshot of their own (READ COMMITTED: each
-- statement of this volatile function takes a new one, so the function refuses other levels,
-- whose snapshot would predate the lock). A reader that starts after the lock waits for the drop
-- to commit and starts from the watermark the drop checked: every event of the dropped day is
-- below it.

create or replace function private.drop_event_partition(
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
  v_newest xid8;
  v_reader record;
  v_readers_until timestamptz;
  -- the readers waited for: whose lock was not granted in time (busy), or who have not read
  -- the partition's newest event (postponed)
  v_waiting_for text[];
  v_phase text := 'readers';
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
  if current_setting('transaction_isolation') <> 'read committed' then
    raise exception 'drop_event_partition: run it in a READ COMMITTED transaction (got %)', current_setting('transaction_isolation')
      using errcode = 'invalid_transaction_state';
  end if;

  begin
    -- No known reader reads events meanwhile (its ACCESS SHARE lock would make us time out with
    -- inserts queued behind us); waiting for these advisory locks, p_rollup_wait_ms in all,
    -- holds up no insert. Always in this order (no step takes two of them).
    v_readers_until := clock_timestamp() + p_rollup_wait_ms * interval '1 millisecond';
    for v_reader in
      select r.name, r.lock_key
      from (values (1, 'metrics_15m', 'precise.rollup.metrics_15m'), (2, 'attribution', 'precise.attribution'),
                   (3, 'creative_fatigue', 'precise.creative_fatigue')) as r(position, name, lock_key)
      order by r.position
    loop
      v_waiting_for := array[v_reader.name];
      perform pg_catalog.set_config('lock_timeout',
        greatest(1, ceil(extract(epoch from v_readers_until - clock_timestamp()) * 1000))::bigint || 'ms', true);
      perform pg_advisory_xact_lock(hashtext(v_reader.lock_key));
    end loop;
    v_waiting_for := null;
    -- From here on every wait queues inserts behind it: keep it short.
    v_phase := 'events';
    perform pg_catalog.set_config('lock_timeout', p_lock_timeout_ms || 'ms', true);
    perform pg_advisory_xact_lock(hashtext('precise.events.partitions'));
    if p_partition not in (select private.event_partitions_before(p_cutoff)) then
      return jsonb_build_object('partition', p_partition, 'status', 'absent');
    end if;
    -- Locked before the check, so no event can land in it between the check and the drop.
    lock table only public.events in access exclusive mode;
    execute format('lock table public.%I in access exclusive mode', p_partition);
    -- its newest arrival (one step down its ingest_xid index; none when empty), against every
    -- reader's watermark: a reader has read the partition once its watermark is above it
    execute format('select e.ingest_xid from public.%I e order by e.ingest_xid desc limit 1', p_partition)
      into v_newest;
    select array_agg(s.name order by s.name) into v_waiting_for
    from public.rollup_state s
    where s.watermark <= v_newest;
    if v_waiting_for is not null then
      return jsonb_build_object('partition', p_partition, 'status', 'postponed', 'waiting_for', to_jsonb(v_waiting_for));
    end if;
    execute format('alter table public.events detach partition public.%I', p_partition);
    execute format('drop table public.%I', p_partition);
  exception when lock_not_available then
    -- (plpgsql variables keep their values past the rolled-back block)
    if v_phase = 'readers' then
      return jsonb_build_object('partition', p_partition, 'status', 'busy', 'waiting_for', to_jsonb(v_waiting_for));
    end if;
    return jsonb_build_object('partition', p_partition, 'status', 'locked');
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

-- The earliest time a stored touch may still be taken into a path: 90 days (the longest
-- click_window_days, private.attribution_settings: settings may be raised and applied to past
-- conversions) before the earliest conversion whose path can still be built. That is the start
-- of the log, before which a range rebuild is refused (none recorded: retention has dropped
-- nothing, the whole log can be rebuilt, -infinity); an event as old as the edge still accepts
-- (event_max_age: a late conversion, or a late touch reopening paths after it); and a path still
-- waiting to be built (an organization's bad settings hold it back).
-- Not kept: the click of a conversion arriving more than 90 days after it, older than this, gives
-- a rebuilt path no user (the click is outside every window, but it named the user).
create function private.attribution_touches_needed_from() returns timestamptz
language sql
stable
set search_path = ''
as $$
  select least(
    coalesce((select (s.properties ->> 'log_starts_at')::timestamptz from public.rollup_state s where s.name = 'metrics_15m'),
             '-infinity'),
    now() - private.event_max_age(),
    (select min(p.converted_at) from public.attribution_paths p where p.path_pending)
  ) - interval '90 days'
$$;

-- Prunes the touch store, called by retention (scheduled/jobs/partition-upkeep.ts): the touches
-- before p_cutoff (a past date) that no path can take any more (attribution_touches_needed_from).
-- Returns how many went. The paths stored keep their touches (they are the ledger); what goes is
-- the non-converting paths of those old periods (GET /v1/attribution finds no touch there).
create function private.prune_attribution_touches(p_cutoff date) returns bigint
language plpgsql
set search_path = ''
as $$
declare
  v_before timestamptz;
  v_pruned bigint;
begin
  if p_cutoff is null or p_cutoff > (now() at time zone 'UTC')::date then
    raise exception 'prune_attribution_touches: the cutoff must be a past date (got %)', p_cutoff
      using errcode = 'invalid_parameter_value';
  end if;
  -- once, not per row
  v_before := least(p_cutoff::timestamp at time zone 'UTC', private.attribution_touches_needed_from());
  delete from public.attribution_touches t where t.at < v_before;
  get diagnostics v_pruned = row_count;
  return v_pruned;
end
$$;

revoke all on function private.attribution_touches_needed_from(), private.prune_attribution_touches(date) from public;
grant execute on function private.attribution_touches_needed_from(), private.prune_attribution_touches(date) to service_role;
