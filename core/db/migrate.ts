import { readdir, readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import type { Database, TransactionHandle } from './port.ts';
import { normalizeSqlScript, splitSqlStatements } from './sql-split.ts';
import { PreciseError } from '../errors.ts';

/**
 * Applies supabase/migrations in order and records them where the Supabase CLI does
 * (supabase_migrations.schema_migrations: version, name, statements), so that a database
 * migrated here and one migrated by `supabase db push` agree on what is applied.
 * Each file runs in its own transaction together with its record. A rerun is a no-op; an
 * applied file whose content changed stops the run (write a new migration instead).
 */
export const MIGRATIONS_DIR = fileURLToPath(new URL('../../supabase/migrations/', import.meta.url));
const COMPAT_BOOTSTRAP = fileURLToPath(new URL('./supabase-compat.sql', import.meta.url));

// One lock id for every migrator of this database (two `precise migrate` at once wait in line).
const MIGRATION_LOCK = 7_302_114_001;

export interface MigrationFile {
  version: string;
  name: string;
  file: string;
  sql: string;
}

export interface MigrationReport {
  applied: string[];
  skipped: string[];
  bootstrapped: boolean;
}

export async function readMigrations(dir = MIGRATIONS_DIR): Promise<MigrationFile[]> {
  const names = (await readdir(dir)).filter((name) => name.endsWith('.sql')).sort();
  return Promise.all(
    names.map(async (file) => {
      const match = /^(\d{14})_([A-Za-z0-9_\-]+)\.sql$/.exec(file);
      if (!match) {
        throw new PreciseError('migration_bad_name', `migration file ${file} must be named YYYYMMDDHHMMSS_name.sql`);
      }
      return { version: match[1]!, name: match[2]!, file, sql: await readFile(path.join(dir, file), 'utf8') };
    }),
  );
}

/**
 * Supabase has auth.uid() and its roles; anything else gets the compatibility bootstrap.
 * Runs under the migration lock, so two migrators starting together do not both create it.
 */
async function ensureSupabaseCompat(tx: TransactionHandle): Promise<boolean> {
  const { rows } = await tx.query<{ ready: boolean }>(
    `select to_regprocedure('auth.uid()') is not null
        and (select count(*) from pg_catalog.pg_roles where rolname in ('anon', 'authenticated', 'service_role')) = 3
        as ready`,
  );
  if (rows[0]?.ready) return false;
  await tx.exec(await readFile(COMPAT_BOOTSTRAP, 'utf8'));
  return true;
}

export async function migrate(
  db: Database,
  options: { dir?: string; onApply?: (migration: MigrationFile) => void } = {},
): Promise<MigrationReport> {
  const migrations = await readMigrations(options.dir);
  const bootstrapped = await db.transaction(async (tx) => {
    await tx.query('select pg_advisory_xact_lock($1)', [MIGRATION_LOCK]);
    const ran = await ensureSupabaseCompat(tx);
    // The table as the Supabase CLI creates it.
    await tx.exec(`
      create schema if not exists supabase_migrations;
      create table if not exists supabase_migrations.schema_migrations (version text not null primary key);
      alter table supabase_migrations.schema_migrations add column if not exists statements text[];
      alter table supabase_migrations.schema_migrations add column if not exists name text;
    `);
    return ran;
  });

  await refuseUnknownHistory(db, migrations);
  const report: MigrationReport = { applied: [], skipped: [], bootstrapped };
  for (const migration of migrations) {
    const applied = await db.transaction(async (tx) => {
      await tx.query('select pg_advisory_xact_lock($1)', [MIGRATION_LOCK]);
      const recorded = await recordedStatements(tx, migration.version);
      if (recorded) {
        assertUnchanged(migration, recorded);
        return false;
      }
      await tx.exec(migration.sql);
      await tx.query(
        'insert into supabase_migrations.schema_migrations (version, name, statements) values ($1, $2, $3)',
        [migration.version, migration.name, splitSqlStatements(migration.sql).map((s) => s.text)],
      );
      return true;
    });
    if (applied) {
      report.applied.push(migration.version);
      options.onApply?.(migration);
    } else {
      report.skipped.push(migration.version);
    }
  }
  return report;
}

/**
 * The pre-release migrations were rewritten once into a baseline (one file per concern, each
 * object defined once). A database built from the old files cannot be upgraded in place; say
 * so, and what to do, before touching it.
 */
export const BASELINE_VERSION = '20261125190000';

async function refuseUnknownHistory(db: Database, migrations: MigrationFile[]): Promise<void> {
  const { rows } = await db.query<{ version: string; name: string | null }>(
    'select version, name from supabase_migrations.schema_migrations order by version',
  );
  const known = new Set(migrations.map((migration) => migration.version));
  const unknown = rows.filter((row) => !known.has(row.version));
  if (unknown.length === 0) return;
  const listed = unknown.map((row) => `${row.version}_${row.name ?? '?'}`);
  const span = listed.length > 2 ? `${listed[0]} … ${listed.at(-1)}` : listed.join(', ');
  if (unknown.every((row) => row.version < BASELINE_VERSION)) {
    throw new PreciseError(
      'migration_pre_baseline',
      `this database was built from Precise's pre-release migrations (${span}), which were rewritten into ` +
        `one baseline (${BASELINE_VERSION}_tenancy and the files after it); it cannot be upgraded in place, ` +
        'and nothing was changed. Keep what you need (pg_dump --data-only), then start from an empty database: ' +
        'for the embedded default, stop Precise and delete its data directory (PRECISE_DATA_DIR, .data by default); ' +
        'for Postgres or Supabase, drop and recreate the database. Then run `precise migrate` (or `supabase db push`) again.',
      { field: 'supabase_migrations.schema_migrations' },
    );
  }
  throw new PreciseError(
    'migration_unknown',
    `this database has migrations this checkout does not know (${span}): it was migrated by a newer Precise. ` +
      'Update this checkout, or point it at another database.',
    { field: 'supabase_migrations.schema_migrations' },
  );
}

async function recordedStatements(tx: TransactionHandle, version: string): Promise<string[] | null> {
  const { rows } = await tx.query<{ statements: string[] | null }>(
    'select statements from supabase_migrations.schema_migrations where version = $1',
    [version],
  );
  if (rows.length === 0) return null;
  return rows[0]!.statements ?? [];
}

function assertUnchanged(migration: MigrationFile, recorded: string[]): void {
  // `supabase migration repair` records a version without statements: nothing to compare.
  if (recorded.length === 0) return;
  // Compared after normalising, so a different (but equivalent) statement split, as the
  // Supabase CLI's, or edited comments and blank lines do not count as a change.
  const applied = normalizeSqlScript(recorded.join(';\n'));
  if (applied !== normalizeSqlScript(migration.sql)) {
    throw new PreciseError(
      'migration_changed',
      `migration ${migration.file} was applied with different content; refusing to continue. ` +
        'Restore the file as applied and put the change in a new migration.',
      { field: migration.file },
    );
  }
}
