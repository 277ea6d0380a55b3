-- Retention of raw events: whole daily partitions older than the cutoff are dropped (never a
-- DELETE, which would bloat the table and cost time in proportion to the rows). Metrics are
-- untouched: reports keep their history after the raw log is gone. Rows of events_default
-- older than the cutoff are left for an operator (they are stray times, not a day's partition).
-- The dedup ledger of sender-chosen ids is pruned to the same horizon.
create function private.drop_event_partitions_before(p_cutoff date) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_partition record;
  v_dropped text[] := '{}';
  v_ledger bigint;
begin
  if p_cutoff is null or p_cutoff > (now() at time zone 'UTC')::date then
    raise exception 'drop_event_partitions_before: the cutoff must be a past date (got %)', p_cutoff
      using errcode = 'invalid_parameter_value';
  end if;
  perform pg_advisory_xact_lock(hashtext('precise.events.partitions'));
  for v_partition in
    select c.relname
    from pg_catalog.pg_inherits i
    join pg_catalog.pg_class c on c.oid = i.inhrelid
    join pg_catalog.pg_namespace n on n.oid = c.relnamespace
    where i.inhparent = 'public.events'::regclass and n.nspname = 'public'
      and c.relname ~ '^events_p\d{8}$'
      and to_date(substr(c.relname, 9), 'YYYYMMDD') < p_cutoff
    order by c.relname
  loop
    execute format('alter table public.events detach partition public.%I', v_partition.relname);
    execute format('drop table public.%I', v_partition.relname);
    v_dropped := v_dropped || v_partition.relname::text;
  end loop;
  delete from public.event_ids e where e.occurred_at < p_cutoff::timestamp at time zone 'UTC';
  get diagnostics v_ledger = row_count;
  return jsonb_build_object('dropped', to_jsonb(v_dropped), 'ledger_rows_pruned', v_ledger);
end
$$;
revoke all on function private.drop_event_partitions_before(date) from public;
grant execute on function private.drop_event_partitions_before(date) to service_role;
