/** Pixel parameters onto the canonical input (ARCHITECTURE.md, "Product contract, v1"). */
export function pixelInput(params: URLSearchParams): Record<string, unknown> {
  const input: Record<string, unknown> = { type: params.get('ev') || 'impression' };
  const text = (name: string, field: string) => {
    const value = params.get(name);
    if (value !== null && value !== '') input[field] = value;
  };
  const number = (name: string, field: string) => {
    const value = params.get(name);
    // A numeric string becomes a number; anything else is passed on for the schema to refuse by name.
    if (value !== null && value !== '') input[field] = /^-?\d+(\.\d+)?$/.test(value.trim()) ? Number(value) : value;
  };
  text('eid', 'event_id');
  text('cmp', 'campaign_id');
  text('crv', 'creative_id');
  text('uid', 'user_key');
  text('cur', 'currency');
  text('consent', 'consent');
  number('ts', 'occurred_at');
  number('v', 'value');
  const assets = params.get('ast');
  if (assets) input.asset_ids = assets.split(',').map((asset) => asset.trim()).filter(Boolean);
  const properties: Record<string, string> = {};
  for (const [name, value] of params) {
    if (name.startsWith('p.') && name.length > 2) properties[name.slice(2)] = value;
  }
  if (Object.keys(properties).length > 0) input.properties = properties;
  return input;
}
