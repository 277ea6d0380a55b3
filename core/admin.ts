import type { Database, TransactionHandle } from './db/port.ts';
import { PreciseError } from './errors.ts';
import { isUuid } from './events/canonical.ts';
import { parseMapping } from './webhooks/delivery.ts';
import { displayPrefix, generateKey, hashKey, KEY_SCOPES, type KeyKind, type KeyScope } from './keys.ts';

/**
 * Operator actions on organizations, keys and campaigns (the CLI calls these; an admin API
 * can later). Each runs in a transaction labelled with the actor, so the audit trail says who.
 */
async function asActor<T>(db: Database, actor: string, fn: (tx: TransactionHandle) => Promise<T>): Promise<T> {
  return db.transaction(async (tx) => {
    await tx.query(`select set_config('precise.actor', $1, true)`, [actor]);
    return fn(tx);
  });
}

export function assertUuid(value: string, field: string): void {
  if (!isUuid(value)) throw new PreciseError('invalid_argument', `${field} must be a UUID, got "${value}"`, { field });
}

export interface Organization {
  id: string;
  name: string;
  kind: string;
  created_at: Date;
}

export async function createOrganization(
  db: Database,
  input: { name: string; kind?: string; properties?: Record<string, unknown> },
  actor = 'cli',
): Promise<Organization> {
  const name = input.name.trim();
  if (!name || name.length > 200) {
    throw new PreciseError('invalid_argument', 'name must be 1 to 200 characters', { field: 'name' });
  }
  const kind = input.kind ?? 'both';
  if (!['data_owner', 'media_buyer', 'both'].includes(kind)) {
    throw new PreciseError('invalid_argument', 'kind must be data_owner, media_buyer or both', { field: 'kind' });
  }
  return asActor(db, actor, async (tx) => {
    const { rows } = await tx.query<Organization>(
      `insert into public.organizations (name, kind, properties) values ($1, $2, $3)
       returning id, name, kind, created_at`,
      [name, kind, input.properties ?? {}],
    );
    return rows[0]!;
  });
}

async function assertOrganizationExists(tx: TransactionHandle, orgId: string): Promise<void> {
  assertUuid(orgId, 'org');
  const { rows } = await tx.query('select 1 from public.organizations where id = $1', [orgId]);
  if (rows.length === 0) throw new PreciseError('not_found', `no organization ${orgId}`, { field: 'org' });
}

export interface CreatedKey {
  id: string;
  org_id: string;
  kind: KeyKind;
  prefix: string;
  scopes: KeyScope[];
  name: string | null;
  properties: Record<string, unknown>;
  /** The clear key: returned once, never stored. */
  key: string;
}

export async function createApiKey(
  db: Database,
  input: { orgId: string; kind: KeyKind; scopes?: KeyScope[]; name?: string; properties?: Record<string, unknown> },
  actor = 'cli',
): Promise<CreatedKey> {
  if (!['publishable', 'secret', 'postback'].includes(input.kind)) {
    throw new PreciseError('invalid_argument', 'kind must be publishable, secret or postback', { field: 'kind' });
  }
  const scopes = [...new Set(input.scopes ?? [])];
  const unknown = scopes.filter((scope) => !KEY_SCOPES.includes(scope));
  if (unknown.length > 0) {
    throw new PreciseError('invalid_argument', `unknown scope ${unknown.join(', ')} (use ${KEY_SCOPES.join(', ')})`, {
      field: 'scopes',
    });
  }
  if (input.kind === 'secret' && scopes.length === 0) {
    throw new PreciseError('invalid_argument', 'a secret key needs at least one scope (ingest, read, admin)', {
      field: 'scopes',
    });
  }
  if (input.kind !== 'secret' && scopes.length > 0) {
    throw new PreciseError('invalid_argument', `a ${input.kind} key takes no scopes: it may only ingest`, {
      field: 'scopes',
    });
  }
  const key = generateKey(input.kind);
  const keyHash = hashKey(key);
  return asActor(db, actor, async (tx) => {
    await assertOrganizationExists(tx, input.orgId);
    const { rows } = await tx.query<Omit<CreatedKey, 'key'>>(
      `insert into public.api_keys (org_id, kind, name, prefix, key_hash, scopes, properties)
       values ($1, $2, $3, $4, $5, $6, $7)
       returning id, org_id, kind, prefix, scopes, name, properties`,
      [input.orgId, input.kind, input.name ?? null, displayPrefix(key), keyHash, scopes, input.properties ?? {}],
    );
    return { ...rows[0]!, key };
  });
}

export const CAMPAIGN_STATUSES = ['draft', 'active', 'paused', 'completed', 'archived'];

export interface Campaign {
  id: string;
  org_id: string;
  name: string;
  status: string;
  properties: Record<string, unknown>;
}

export async function createCampaign(
  db: Database,
  input: { orgId: string; name: string; status?: string; properties?: Record<string, unknown> },
  actor = 'cli',
): Promise<Campaign> {
  const name = input.name.trim();
  if (!name || name.length > 200) {
    throw new PreciseError('invalid_argument', 'name must be 1 to 200 characters', { field: 'name' });
  }
  const status = input.status ?? 'draft';
  if (!CAMPAIGN_STATUSES.includes(status)) {
    throw new PreciseError('invalid_argument', `status must be one of ${CAMPAIGN_STATUSES.join(', ')}`, {
      field: 'status',
    });
  }
  const properties = input.properties ?? {};
  if (typeof properties !== 'object' || properties === null || Array.isArray(properties)) {
    throw new PreciseError('invalid_argument', 'properties must be a JSON object', { field: 'properties' });
  }
  return asActor(db, actor, async (tx) => {
    await assertOrganizationExists(tx, input.orgId);
    const { rows } = await tx.query<Campaign>(
      `insert into public.campaigns (org_id, name, status, properties) values ($1, $2, $3, $4)
       returning id, org_id, name, status, properties`,
      [input.orgId, name, status, properties],
    );
    return rows[0]!;
  });
}

export interface Integration {
  id: string;
  org_id: string;
  name: string;
  kind: string;
  properties: Record<string, unknown>;
}

/** A DSP integration; its webhook secret is derived (see core/webhooks/delivery.ts), never stored. */
export async function createIntegration(
  db: Database,
  input: { orgId: string; name: string; mapping?: unknown },
  actor = 'cli',
): Promise<Integration> {
  const name = input.name.trim();
  if (!name || name.length > 200) {
    throw new PreciseError('invalid_argument', 'name must be 1 to 200 characters', { field: 'name' });
  }
  const properties: Record<string, unknown> = { secret_version: 1 };
  if (input.mapping !== undefined) properties.mapping = parseMapping(input.mapping);
  return asActor(db, actor, async (tx) => {
    await assertOrganizationExists(tx, input.orgId);
    const { rows } = await tx.query<Integration>(
      `insert into public.integrations (org_id, name, properties) values ($1, $2, $3)
       returning id, org_id, name, kind, properties`,
      [input.orgId, name, properties],
    );
    return rows[0]!;
  });
}
