import { cp, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BASELINE_VERSION, migrate, MIGRATIONS_DIR } from '../../core/db/migrate.ts';
import { PreciseError } from '../../core/errors.ts';
import { splitSqlStatements } from '../../core/db/sql-split.ts';
import { BACKEND, createEmptyDatabase, type TestDatabase } from '../helpers/database.ts';

describe(`migrator (${BACKEND})`, () => {
  let test: TestDatabase;
  let dir: string;

  beforeEach(async () => {
    test = await createEmptyDatabase();
    dir = await mkdtemp(path.join(tmpdir(), 'precise-migrations-'));
    await cp(MIGRATIONS_DIR, dir, { recursive: true });
  });
  afterEach(async () => {
    await test.drop();
    await rm(dir, { recursive: true, force: true });
  });

  const files = async () => (await readdir(dir)).filter((name) => name.endsWith('.sql')).sort();
  const recorded = async () =>
    (
      await test.db.query<{ version: string; name: string; statements: string[] }>(
        'select version, name, statements from supabase_migrations.schema_migrations order by version',
      )
    ).rows;

  it('applies every file in order, records it where Supabase does, and is a no-op on rerun', async () => {
    const names = await files();
    const first = await migrate(test.db, { dir });
    expect(first.applied).toEqual(names.map((name) => name.slice(0, 14)));
    const rows = await recorded();
    expect(rows.map((row) => `${row.version}_${row.name}.sql`)).toEqual(names);
    // one entry per statement of the file, as the Supabase CLI records them
    for (const row of rows) {
      const sql = await readFile(path.join(dir, `${row.version}_${row.name}.sql`), 'utf8');
      expect({ file: row.name, statements: row.statements.length }).toEqual({ file: row.name, statements: splitSqlStatements(sql).length });
      expect(row.statements.length).toBeGreaterThan(0);
    }

    const tablesBefore = await test.db.query<{ n: number }>(`select count(*)::int as n from pg_tables where schemaname = 'public'`);
    const second = await migrate(test.db, { dir });
    expect(second.applied).toEqual([]);
    expect(second.skipped).toEqual(first.applied);
    expect(second.bootstrapped).toBe(false);
    const tablesAfter = await test.db.query<{ n: number }>(`select count(*)::int as n from pg_tables where schemaname = 'public'`);
    expect(tablesAfter.rows[0]!.n).toBe(tablesBefore.rows[0]!.n);
  });

  it('refuses to continue when an applied file has changed, and applies nothing after it', async () => {
    await migrate(test.db, { dir });
    const [firstFile] = await files();
    const original = await readFile(path.join(dir, firstFile!), 'utf8');
    await writeFile(path.join(dir, firstFile!), original.replace('check (length(btrim(name)) between 1 and 200)', 'check (length(name) < 500)'));
    await writeFile(path.join(dir, '29991231000000_later.sql'), 'create table public.later (id int);');

    const error = await migrate(test.db, { dir }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(PreciseError);
    expect((error as PreciseError).code).toBe('migration_changed');
    expect((error as PreciseError).message).toContain(firstFile);
    const later = await test.db.query(`select to_regclass('public.later') as t`);
    expect(later.rows[0]).toEqual({ t: null });
  });

  it('accepts an applied file whose comments or blank lines changed', async () => {
    await migrate(test.db, { dir });
    const [firstFile] = await files();
    const original = await readFile(path.join(dir, firstFile!), 'utf8');
    // blank lines between statements (before a top-level comment), never inside a function's body
    const edited = original.replaceAll('\n\n--', '\n\n\n--');
    expect(edited).not.toBe(original);
    await writeFile(path.join(dir, firstFile!), `-- reviewed again\n\n${edited}`);
    expect((await migrate(test.db, { dir })).applied).toEqual([]);
  });

  it('applies a new file alone, and rolls a failing file back whole', async () => {
    await migrate(test.db, { dir });
    await writeFile(
      path.join(dir, '29991231000000_bad.sql'),
      'create table public.half_done (id int);\nselect * from public.no_such_table;',
    );
    await expect(migrate(test.db, { dir })).rejects.toThrow(/no_such_table/);
    const half = await test.db.query(`select to_regclass('public.half_done') as t`);
    expect(half.rows[0]).toEqual({ t: null });
    expect((await recorded()).map((row) => row.version)).not.toContain('29991231000000');

    await writeFile(path.join(dir, '29991231000000_bad.sql'), 'create table public.half_done (id int);');
    expect((await migrate(test.db, { dir })).applied).toEqual(['29991231000000']);
  });

  it('refuses a file not named YYYYMMDDHHMMSS_name.sql', async () => {
    await writeFile(path.join(dir, 'add_things.sql'), 'select 1;');
    await expect(migrate(test.db, { dir })).rejects.toMatchObject({ code: 'migration_bad_name' });
  });

  it('lets two migrators race: each file is applied once', async () => {
    const [a, b] = await Promise.all([migrate(test.db, { dir }), migrate(test.db, { dir })]);
    expect([...a.applied, ...b.applied].sort()).toEqual((await files()).map((name) => name.slice(0, 14)));
    expect(await recorded()).toHaveLength((await files()).length);
  });

  it('leaves an existing Supabase auth schema alone', async () => {
    // What a Supabase database already has: auth.users and its own auth.uid().
    const supabaseUser = '11111111-1111-4111-8111-111111111111';
    await test.db.exec(`
      create schema auth;
      create table auth.users (id uuid primary key, email text, raw_user_meta_data jsonb default '{}');
      create function auth.uid() returns uuid language sql stable as $$ select '${supabaseUser}'::uuid $$;
    `);
    // the roles are cluster-wide on Postgres; on PGlite create them as Supabase has them
    await test.db.exec(`
      do $$ begin
        if not exists (select 1 from pg_roles where rolname = 'anon') then create role anon nologin; end if;
        if not exists (select 1 from pg_roles where rolname = 'authenticated') then create role authenticated nologin; end if;
        if not exists (select 1 from pg_roles where rolname = 'service_role') then create role service_role nologin bypassrls; end if;
      end $$;
    `);
    const report = await migrate(test.db, { dir });
    expect(report.bootstrapped).toBe(false);
    expect(report.applied.length).toBe((await files()).length);
    const uid = await test.db.query<{ uid: string }>('select auth.uid() as uid');
    expect(uid.rows[0]!.uid).toBe(supabaseUser);
    expect((await test.db.query(`select to_regprocedure('auth.role()') as f`)).rows[0]).toEqual({ f: null });
  });

  it('refuses a database built from the pre-release migrations, says what to do, and changes nothing', async () => {
    // what the pre-release files left behind: their versions, recorded where Supabase records them
    await test.db.exec(`
      create schema supabase_migrations;
      create table supabase_migrations.schema_migrations (version text primary key, statements text[], name text);
      insert into supabase_migrations.schema_migrations (version, name)
      values ('20261124160000', 'tenancy'), ('20261124230000', 'metric_store'), ('20261125180000', 'key_warmup');
    `);
    const refusal = await migrate(test.db, { dir }).catch((error: unknown) => error);
    expect(refusal).toBeInstanceOf(PreciseError);
    expect((refusal as PreciseError).code).toBe('migration_pre_baseline');
    const message = (refusal as PreciseError).message;
    expect(message).toContain('20261124160000_tenancy … 20261125180000_key_warmup');
    expect(message).toContain(`${BASELINE_VERSION}_tenancy`);
    expect(message).toMatch(/PRECISE_DATA_DIR.*drop and recreate the database/s);
    const tables = await test.db.query(`select 1 from pg_catalog.pg_tables where schemaname = 'public'`);
    expect(tables.rows).toHaveLength(0);
    const versions = await recorded();
    expect(versions.map((row) => row.version)).toEqual(['20261124160000', '20261124230000', '20261125180000']);
  });

  it('refuses a database migrated by a newer checkout', async () => {
    await migrate(test.db, { dir });
    await test.db.query(`insert into supabase_migrations.schema_migrations (version, name) values ('29990101000000', 'future')`);
    const refusal = await migrate(test.db, { dir }).catch((error: unknown) => error);
    expect((refusal as PreciseError).code).toBe('migration_unknown');
    expect((refusal as PreciseError).message).toContain('29990101000000_future');
  });

  it('starts the baseline at the first file', async () => {
    expect((await files())[0]).toBe(`${BASELINE_VERSION}_tenancy.sql`);
  });
});

