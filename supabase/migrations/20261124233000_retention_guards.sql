-- Retention that never loses a count, and never strands a day in events_default.
--
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

-- Drops the raw-event partitions of days before p_cutoff, once every event in them is in the
-- metrics: it folds pending events in first (a rollup step), and postpones the drop while an
-- event older than the cutoff is still above the watermark (another rollup running, a
-- transaction still open). It then records where the log starts, so that a range recompute
-- never "rebuilds" dropped days into empty ones.
create function private.apply_event_retention(p_cutoff date) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_rollup jsonb;
  v_watermark xid8;
  v_pending bigint;
  v_result jsonb;
begin
  v_rollup := private.rollup_metrics();
  select s.watermark into v_watermark from public.rollup_state s where s.name = 'metrics_15m';
  select count(*) into v_pending
  from public.events e
  where e.ingest_xid >= v_watermark and e.occurred_at < p_cutoff::timestamp at time zone 'UTC';
  if v_pending > 0 then
    return jsonb_build_object('dropped', '[]'::jsonb, 'postponed', true,
      'reason', format('%s events older than the cutoff are not in the metrics yet', v_pending), 'rollup', v_rollup);
  end if;
  v_result := private.drop_event_partitions_before(p_cutoff);
  update public.rollup_state s
     set properties = s.properties || jsonb_build_object('log_starts_at',
           greatest(coalesce((s.properties ->> 'log_starts_at')::timestamptz, '-infinity'),
                    p_cutoff::timestamp at time zone 'UTC')),
         updated_at = now()
   where s.name = 'metrics_15m';
  return v_result || jsonb_build_object('postponed', false);
end
$$;

revoke all on function private.carve_default_event_days() from public;
revoke all on function private.apply_event_retention(date) from public;
grant execute on function private.carve_default_event_days(), private.apply_event_retention(date) to service_role;
