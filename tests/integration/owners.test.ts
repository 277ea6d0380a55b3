import { afterAll, beforeEach, beforeAll, describe, expect, it } from 'vitest';
import type { Database, TransactionHandle } from '../../core/db/port.ts';
import { asUser, attempt, BACKEND, createTestDatabase, sqlState, type TestDatabase } from '../helpers/database.ts';
import { createAuthUser } from '../helpers/seed.ts';

// An organization always keeps an owner, and an admin manages members but never owners.
describe(`owners (${BACKEND})`, () => {
  let test: TestDatabase;
  let orgId: string;
  let owner: string;
  let coOwner: string;
  let admin: string;
  let viewer: string;
  let serial = 0;

  const roleOf = async (userId: string) =>
    (await test.db.query<{ role: string }>('select role from org_members where org_id = $1 and user_id = $2', [orgId, userId])).rows[0]?.role;
  const owners = async () =>
    (await test.db.query<{ n: number }>(`select count(*)::int as n from org_members where org_id = $1 and role = 'owner'`, [orgId])).rows[0]!.n;

  beforeAll(async () => {
    test = await createTestDatabase();
  });
  afterAll(() => test?.drop());

  // a fresh org per test: owner, co-owner, admin, viewer
  beforeEach(async () => {
    serial += 1;
    orgId = (await test.db.query<{ id: string }>(`insert into organizations (name) values ($1) returning id`, [`Owners ${serial}`])).rows[0]!.id;
    const user = (name: string) => createAuthUser(test.db, `${name}-${serial}@owners.test`);
    owner = await user('owner');
    coOwner = await user('co-owner');
    admin = await user('admin');
    viewer = await user('viewer');
    await test.db.query(
      `insert into org_members (org_id, user_id, role) values ($1, $2, 'owner'), ($1, $3, 'owner'), ($1, $4, 'admin'), ($1, $5, 'viewer')`,
      [orgId, owner, coOwner, admin, viewer],
    );
  });

  it('an admin can neither demote nor remove an owner, nor make anyone one, but manages the others', async () => {
    await asUser(test.db, admin, async (tx) => {
      expect((await attempt(tx, `update org_members set role = 'viewer' where org_id = $1 and user_id = $2`, [orgId, owner])).rowCount).toBe(0);
      expect((await attempt(tx, `update org_members set properties = '{"x": 1}' where org_id = $1 and user_id = $2`, [orgId, coOwner])).rowCount).toBe(0);
      expect((await attempt(tx, `delete from org_members where org_id = $1 and user_id = $2`, [orgId, owner])).rowCount).toBe(0);
      expect((await attempt(tx, `delete from org_members where org_id = $1 and role = 'owner'`, [orgId])).rowCount).toBe(0);
      expect((await attempt(tx, `update org_members set role = 'owner' where org_id = $1 and user_id = $2`, [orgId, admin])).code).toBe('42501');
      // what an admin may do still works
      expect((await attempt(tx, `update org_members set role = 'editor' where org_id = $1 and user_id = $2`, [orgId, viewer])).rowCount).toBe(1);
      expect((await attempt(tx, `delete from org_members where org_id = $1 and user_id = $2`, [orgId, viewer])).rowCount).toBe(1);
      const roles = await tx.query<{ role: string }>(`select role from org_members where org_id = $1 and user_id in ($2, $3)`, [orgId, owner, coOwner]);
      expect(roles.rows.map((row) => row.role)).toEqual(['owner', 'owner']);
    });
  });

  it('an owner demotes or removes another owner while one remains, never the last', async () => {
    await asUser(test.db, owner, async (tx) => {
      expect((await attempt(tx, `update org_members set role = 'admin' where org_id = $1 and user_id = $2`, [orgId, coOwner])).rowCount).toBe(1);
      expect((await attempt(tx, `update org_members set role = 'admin' where org_id = $1 and user_id = $2`, [orgId, owner])).code).toBe('23514');
      expect((await attempt(tx, `delete from org_members where org_id = $1 and user_id = $2`, [orgId, owner])).code).toBe('23514');
    });
    await asUser(test.db, owner, async (tx) => {
      expect((await attempt(tx, `delete from org_members where org_id = $1 and user_id = $2`, [orgId, coOwner])).rowCount).toBe(1);
      // one statement that would leave none fails as a whole
      expect((await attempt(tx, `update org_members set role = 'admin' where org_id = $1`, [orgId])).code).toBe('23514');
      expect((await attempt(tx, `delete from org_members where org_id = $1`, [orgId])).code).toBe('23514');
    });
    await asUser(test.db, coOwner, async (tx) => {
      // an owner may step down while another owner stays
      expect((await attempt(tx, `update org_members set role = 'viewer' where org_id = $1 and user_id = $2`, [orgId, coOwner])).rowCount).toBe(1);
    });
  });

  it('the last owner stays whoever asks: service_role, the database owner, an account deletion', async () => {
    await test.db.query(`delete from org_members where org_id = $1 and user_id = $2`, [orgId, coOwner]);
    await asServiceRole(test.db, async (tx) => {
      expect((await attempt(tx, `update org_members set role = 'admin' where org_id = $1 and user_id = $2`, [orgId, owner])).code).toBe('23514');
      expect((await attempt(tx, `delete from org_members where org_id = $1 and user_id = $2`, [orgId, owner])).code).toBe('23514');
      // moving the owner row to another org leaves this one without an owner too
      const other = (await tx.query<{ id: string }>(`insert into organizations (name) values ('Elsewhere') returning id`)).rows[0]!.id;
      expect((await attempt(tx, `update org_members set org_id = $1 where org_id = $2 and user_id = $3`, [other, orgId, owner])).code).toBe('23514');
    });
    expect(await sqlState(() => test.db.query(`delete from org_members where org_id = $1 and user_id = $2`, [orgId, owner]))).toBe('23514');
    expect(await sqlState(() => test.db.query('delete from auth.users where id = $1', [owner]))).toBe('23514');
    expect(await roleOf(owner)).toBe('owner');
    // promoting someone first lets the former owner go
    await test.db.query(`update org_members set role = 'owner' where org_id = $1 and user_id = $2`, [orgId, admin]);
    await test.db.query('delete from auth.users where id = $1', [owner]);
    expect(await roleOf(owner)).toBeUndefined();
    expect(await owners()).toBe(1);
  });

  it('deleting the organization takes its owners with it', async () => {
    await asUser(test.db, owner, async (tx) => {
      expect((await attempt(tx, 'delete from organizations where id = $1', [orgId])).rowCount).toBe(1);
    });
    await test.db.query('delete from organizations where id = $1', [orgId]);
    const left = await test.db.query('select 1 from org_members where org_id = $1', [orgId]);
    expect(left.rows).toHaveLength(0);
  });

  const demote = (userId: string) => (tx: TransactionHandle) =>
    tx.query(`update org_members set role = 'admin' where org_id = $1 and user_id = $2`, [orgId, userId]);

  it.runIf(BACKEND === 'postgres')('two owners demoting each other at once: the second fails, an owner remains', async () => {
    const second = await secondWhileFirstOpen(
      (fn) => asUserCommitting(test.db, owner, fn),
      demote(coOwner),
      (fn) => asUserCommitting(test.db, coOwner, fn),
      demote(owner),
    );
    // it waited for the first's lock on the owner row, then found no other owner left
    expect(second).toBe('23514');
    expect(await owners()).toBe(1);
    expect(await roleOf(owner)).toBe('owner');
  });

  it.runIf(BACKEND === 'postgres')('two backend sessions demoting the two owners at once: the second fails', async () => {
    const backend = (fn: (tx: TransactionHandle) => Promise<void>) => test.db.transaction(fn);
    expect(await secondWhileFirstOpen(backend, demote(coOwner), backend, demote(owner))).toBe('23514');
    expect(await owners()).toBe(1);
  });
});

type Transaction = (fn: (tx: TransactionHandle) => Promise<void>) => Promise<void>;

/**
 * Runs `firstWork` in a transaction left open while `secondWork` starts in another, then
 * commits the first; returns the second's SQLSTATE (undefined when it succeeded).
 */
async function secondWhileFirstOpen(
  first: Transaction,
  firstWork: (tx: TransactionHandle) => Promise<unknown>,
  second: Transaction,
  secondWork: (tx: TransactionHandle) => Promise<unknown>,
): Promise<string | undefined> {
  let commitFirst!: () => void;
  const firstMayCommit = new Promise<void>((resolve) => (commitFirst = resolve));
  let firstDone!: () => void;
  const firstWorked = new Promise<void>((resolve) => (firstDone = resolve));
  const firstRun = first(async (tx) => {
    await firstWork(tx);
    firstDone();
    await firstMayCommit;
  });
  await firstWorked;
  const secondRun = second(async (tx) => void (await secondWork(tx)));
  // time for the second to reach its lock wait (without the trigger's lock both would pass)
  await new Promise((resolve) => setTimeout(resolve, 300));
  commitFirst();
  await firstRun;
  return sqlState(() => secondRun);
}

/** The backend through PostgREST: role service_role with its claims, rolled back. */
async function asServiceRole(db: Database, fn: (tx: TransactionHandle) => Promise<void>): Promise<void> {
  const rollback = new Error('rollback');
  await db
    .transaction(async (tx) => {
      await tx.query(`select set_config('request.jwt.claims', $1, true)`, [JSON.stringify({ role: 'service_role' })]);
      await tx.query('set local role service_role');
      await fn(tx);
      throw rollback;
    })
    .catch((error) => {
      if (error !== rollback) throw error;
    });
}

/** A signed-in user's transaction that commits (asUser rolls back). */
function asUserCommitting(db: Database, userId: string, fn: (tx: TransactionHandle) => Promise<void>): Promise<void> {
  return db.transaction(async (tx) => {
    await tx.query(`select set_config('request.jwt.claims', $1, true)`, [JSON.stringify({ sub: userId, role: 'authenticated' })]);
    await tx.query('set local role authenticated');
    await fn(tx);
  });
}
