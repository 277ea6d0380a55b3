-- S2S postbacks. A conversion counts once per (org, click_id, txid), or per (org, click_id,
-- type) when the network sends no txid. The same key with a new status is a status change,
-- recorded as a new event; allowed: pending -> approved -> rejected (a chargeback), and
-- pending -> rejected. The check and the insert run under a lock on the key, so a network
-- retrying, or sending two statuses at once, cannot slip past it.

create function private.status_transition_allowed(p_from text, p_to text) returns boolean
language sql
immutable
set search_path = ''
as $$
  select (p_from, p_to) in (('pending', 'approved'), ('pending', 'rejected'), ('approved', 'rejected'))
$$;

-- p_event: one canonical event (type, click_id, status, properties.txid, ...).
-- Returns { outcome: stored | duplicate | refused, status, previous_status, unmatched_click }.
-- A conversion for a click this org never recorded is stored all the same, flagged
-- context.unmatched_click (attribution decides what to do with it).
create function public.record_postback(p_event jsonb)
returns jsonb
language plpgsql
set search_path = ''
as $$
declare
  v_org uuid := (p_event ->> 'org_id')::uuid;
  v_click text := p_event ->> 'click_id';
  v_type text := p_event ->> 'type';
  v_txid text := p_event -> 'properties' ->> 'txid';
  v_status text := p_event ->> 'status';
  v_seen text[];
  v_latest text;
  v_matched boolean;
  v_inserted integer;
begin
  perform pg_advisory_xact_lock(hashtextextended(concat_ws(' ', v_org, v_click, v_type, v_txid), 0));

  select array_agg(e.status), (array_agg(e.status order by e.received_at desc, e.event_id desc))[1]
    into v_seen, v_latest
    from public.events e
   where e.org_id = v_org and e.click_id = v_click and e.type = v_type
     and (e.properties ->> 'txid') is not distinct from v_txid;

  -- A status this key already had: the network retrying (perhaps late, after a newer status).
  if v_status = any (v_seen) then
    return jsonb_build_object('outcome', 'duplicate', 'status', v_latest, 'previous_status', v_latest);
  end if;
  if v_latest is not null and not private.status_transition_allowed(v_latest, v_status) then
    return jsonb_build_object('outcome', 'refused', 'status', v_latest, 'previous_status', v_latest);
  end if;

  v_matched := exists (
    select 1 from public.events c where c.org_id = v_org and c.click_id = v_click and c.type = 'click');
  select count(*) into v_inserted
    from private.insert_events(jsonb_build_array(
      jsonb_set(p_event, '{context,unmatched_click}', to_jsonb(not v_matched))));

  return jsonb_build_object(
    'outcome', case when v_inserted = 1 then 'stored' else 'duplicate' end,
    'status', v_status,
    'previous_status', v_latest,
    'unmatched_click', not v_matched);
end
$$;

revoke all on function private.status_transition_allowed(text, text) from public;
grant execute on function private.status_transition_allowed(text, text) to service_role;
revoke all on function public.record_postback(jsonb) from public, anon, authenticated;
grant execute on function public.record_postback(jsonb) to service_role;
