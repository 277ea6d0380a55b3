import { describe, expect, it } from 'vitest';
import { normalizeSqlScript, splitSqlStatements } from '../../core/db/sql-split.ts';

describe('splitSqlStatements', () => {
  it('splits on top-level semicolons only', () => {
    const script = `
      -- a comment; with a semicolon
      create table t (a text default 'x;y', "b;c" int);
      /* block ; /* nested ; */ still comment */
      create function f() returns int language plpgsql as $body$
      begin
        perform 1; return 2;
      end $body$;
      insert into t values (E'it\\'s; fine');
      select $$a;b$$, $1
    `;
    const texts = splitSqlStatements(script).map((statement) => statement.text);
    expect(texts).toHaveLength(4);
    expect(texts[0]).toMatch(/^-- a comment; with a semicolon\n\s*create table t \(a text default 'x;y', "b;c" int\)$/);
    expect(texts[1]).toContain('perform 1; return 2;');
    expect(texts[2]).toBe(`insert into t values (E'it\\'s; fine')`);
    expect(texts[3]).toBe('select $$a;b$$, $1');
  });

  it('drops statements that are only comments and whitespace', () => {
    expect(splitSqlStatements('  ; -- nothing\n ;\n/* x */;')).toEqual([]);
  });

  it('normalises comments and whitespace but not quoted text', () => {
    const a = normalizeSqlScript("create  table t (\n  a text -- the a\n);\nselect 'x  y';");
    const b = normalizeSqlScript("create table t ( a text );  select 'x  y'");
    expect(a).toBe(b);
    expect(normalizeSqlScript("select 'x y'")).not.toBe(normalizeSqlScript("select 'x  y'"));
  });
});
