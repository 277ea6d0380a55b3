import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hashKey } from '../../core/keys.ts';
import { BACKEND } from '../helpers/database.ts';
import { createCliSandbox, type CliSandbox } from '../helpers/cli.ts';

describe(`precise CLI (${BACKEND})`, () => {
  let cli: CliSandbox;
  let orgId: string;

  beforeAll(async () => {
    cli = await createCliSandbox();
  });
  afterAll(() => cli?.dispose());

  it('migrates, and a second migrate applies nothing', async () => {
    const first = await cli.run('migrate', '--json');
    expect(first.code).toBe(0);
    // on PGlite the CLI opens and migrates the embedded database before running the command
    if (BACKEND === 'postgres') expect(first.json.applied.length).toBeGreaterThanOrEqual(6);
    const second = await cli.run('migrate', '--json');
    expect(second.json.applied).toEqual([]);
    expect(second.json.skipped.length).toBeGreaterThanOrEqual(6);
  });

  it('creates an organization', async () => {
    const result = await cli.run('org', 'create', '--name', 'Acme Media', '--kind', 'media_buyer', '--json');
    expect(result.code).toBe(0);
    expect(result.json).toMatchObject({ name: 'Acme Media', kind: 'media_buyer' });
    orgId = result.json.id;
    const human = await cli.run('org', 'create', '--name', 'Second Org');
    expect(human.out).toMatch(/^organization [0-9a-f-]{36} \(Second Org, both\)$/);
  });

  it('prints a key once and stores only its hash', async () => {
    const result = await cli.run('key', 'create', '--org', orgId, '--kind', 'secret', '--scopes', 'ingest,read', '--name', 'server', '--json');
    expect(result.code).toBe(0);
    const { key, id, scopes, prefix } = result.json;
    expect(key).toMatch(/^sk_[0-9A-Za-z]{32}$/);
    expect(scopes).toEqual(['ingest', 'read']);
    expect(key.startsWith(prefix)).toBe(true);

    const stored = await cli.inspect(async (db) => {
      const row = await db.query<{ key_hash: string; whole: string }>(
        'select key_hash, row_to_json(k)::text as whole from api_keys k where id = $1',
        [id],
      );
      const trail = await db.query<{ whole: string }>(`select row_to_json(a)::text as whole from audit_log a where table_name = 'api_keys'`);
      return { ...row.rows[0]!, trail: trail.rows.map((r) => r.whole).join('\n') };
    });
    expect(stored.key_hash).toBe(hashKey(key));
    expect(stored.whole).not.toContain(key.slice(3));
    expect(stored.trail).toContain(id);
    expect(stored.trail).not.toContain(key.slice(3));
    expect(stored.trail).not.toContain(stored.key_hash);

    const publishable = await cli.run('key', 'create', '--org', orgId, '--kind', 'publishable');
    expect(publishable.out.split('\n')[0]).toMatch(/^pk_[0-9A-Za-z]{32}$/);
    expect(publishable.out).toContain('not shown again');
  });

  it('refuses bad key arguments with a clear message', async () => {
    const cases: Array<[string[], RegExp]> = [
      [['--kind', 'secret'], /secret key needs at least one scope/],
      [['--kind', 'publishable', '--scopes', 'read'], /publishable key takes no scopes/],
      [['--kind', 'secret', '--scopes', 'ingest,write'], /unknown scope write/],
      [['--kind', 'master'], /kind must be publishable, secret or postback/],
    ];
    for (const [args, message] of cases) {
      const result = await cli.run('key', 'create', '--org', orgId, ...args);
      expect({ args, code: result.code }).toEqual({ args, code: 2 });
      expect(result.err).toMatch(message);
    }
    const badOrg = await cli.run('key', 'create', '--org', 'not-a-uuid', '--kind', 'publishable');
    expect(badOrg.err).toMatch(/org must be a UUID/);
    const unknownOrg = await cli.run('key', 'create', '--org', '00000000-0000-4000-8000-000000000000', '--kind', 'publishable', '--json');
    expect(unknownOrg.code).toBe(1);
    expect(JSON.parse(unknownOrg.err)).toMatchObject({ error: { code: 'not_found', details: { field: 'org' } } });
  });

  it('creates a campaign with properties', async () => {
    const properties = { budget: 50000, targeting: { age: '25-54', interests: ['sports'] }, creative_fatigue_threshold: 2000000 };
    const result = await cli.run('campaign', 'create', '--org', orgId, '--name', 'Winter', '--status', 'active', '--properties', JSON.stringify(properties), '--json');
    expect(result.code).toBe(0);
    expect(result.json).toMatchObject({ org_id: orgId, name: 'Winter', status: 'active', properties });
    const count = await cli.inspect(async (db) => (await db.query<{ n: number }>('select count(*)::int as n from campaigns where org_id = $1', [orgId])).rows[0]!.n);
    expect(count).toBe(1);

    const badJson = await cli.run('campaign', 'create', '--org', orgId, '--name', 'X', '--properties', '{budget:1}');
    expect(badJson.code).toBe(2);
    expect(badJson.err).toMatch(/--properties is not valid JSON/);
    const array = await cli.run('campaign', 'create', '--org', orgId, '--name', 'X', '--properties', '[1]');
    expect(array.err).toMatch(/--properties must be a JSON object/);
    const status = await cli.run('campaign', 'create', '--org', orgId, '--name', 'X', '--status', 'live');
    expect(status.err).toMatch(/status must be one of/);
  });

  it('explains usage errors', async () => {
    const unknown = await cli.run('org', 'delete');
    expect(unknown.code).toBe(2);
    expect(unknown.err).toMatch(/unknown command "org delete"/);
    const missing = await cli.run('org', 'create', '--json');
    expect(missing.code).toBe(2);
    expect(JSON.parse(missing.err)).toMatchObject({ error: { code: 'invalid_argument', message: '--name is required', details: { field: 'name' } } });
    const flag = await cli.run('org', 'create', '--nme', 'x');
    expect(flag.code).toBe(2);
    expect(flag.err).toMatch(/--nme/);
    const help = await cli.run('--help');
    expect(help.code).toBe(0);
    expect(help.out).toContain('key create --org ORG_ID');
  });

  it('loads the demo data, and loading it again changes nothing', async () => {
    const first = await cli.run('seed', '--json');
    expect(first.code).toBe(0);
    const second = await cli.run('seed', '--json');
    expect(second.json).toEqual(first.json);
    const demo = await cli.inspect(async (db) =>
      (
        await db.query<{ budget: number; threshold: number; creatives: number; grants: number }>(
          `select (c.properties ->> 'budget')::int as budget,
                  (c.properties ->> 'creative_fatigue_threshold')::int as threshold,
                  jsonb_array_length(c.properties -> 'creatives') as creatives,
                  (select count(*)::int from permissions where grantee_id = c.org_id) as grants
           from campaigns c where c.name = 'Winter Sale 2026'`,
        )
      ).rows,
    );
    expect(demo).toEqual([{ budget: 50000, threshold: 2000000, creatives: 2, grants: 1 }]);
  });

  it('runs a job once', async () => {
    const result = await cli.run('jobs', 'run', 'partition-upkeep', '--json');
    expect(result.code).toBe(0);
    expect(result.json).toMatchObject({ job: 'partition-upkeep', result: { created: 0, daysAhead: 14 } });
    expect((await cli.run('jobs', 'run', 'nope')).code).toBe(2);
  });

  it('rebuilds a range of attribution with a progress bar', async () => {
    const result = await cli.run('jobs', 'run', 'attribution', '--from', '2026-11-01T00:00:00Z', '--to', '2026-11-04T00:00:00Z', '--json');
    expect(result.code).toBe(0);
    expect(result.json).toMatchObject({ job: 'attribution', result: { days: 3 } });
    expect(result.err).toMatch(/attribution \[#{30}\] 3\/3 100%/);
    expect((await cli.run('jobs', 'run', 'attribution', '--from', 'soon', '--to', '2026-11-04')).code).toBe(2);
  });
});
