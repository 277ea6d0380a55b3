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
revoke all on function private.carve_default_event_days() from public;
grant execute on function private.carve_default_event_days() to service_role;
