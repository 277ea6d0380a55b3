/**
 * Splits a SQL script into statements the way psql and the Supabase CLI do: on top-level
 * semicolons, never inside quotes, dollar-quoted bodies or comments. Also gives a normalised
 * form (comments dropped, whitespace collapsed outside literals) so that two splittings of the
 * same script compare equal whatever they did with comments and blank lines.
 */
export interface SplitStatement {
  /** The statement as written, trimmed, without its terminating semicolon. */
  text: string;
  /** Comments removed and whitespace collapsed outside quoted text. */
  normalized: string;
}

export function splitSqlStatements(script: string): SplitStatement[] {
  const statements: SplitStatement[] = [];
  let start = 0;
  let normalized = '';
  let pendingSpace = false;
  let i = 0;

  const emit = (chunk: string) => {
    if (pendingSpace && normalized.length > 0) normalized += ' ';
    pendingSpace = false;
    normalized += chunk;
  };
  const finish = (end: number) => {
    const text = script.slice(start, end).trim();
    if (normalized.length > 0) statements.push({ text, normalized });
    normalized = '';
    pendingSpace = false;
    start = end + 1;
  };

  while (i < script.length) {
    const ch = script[i]!;
    const next = script[i + 1];
    if (ch === '-' && next === '-') {
      const end = script.indexOf('\n', i);
      i = end === -1 ? script.length : end + 1;
      pendingSpace = true;
    } else if (ch === '/' && next === '*') {
      i = skipBlockComment(script, i);
      pendingSpace = true;
    } else if (ch === "'" || ch === '"') {
      const escapes = ch === "'" && /[eE]$/.test(script.slice(Math.max(0, i - 1), i)) && !/\w/.test(script[i - 2] ?? '');
      const end = skipQuoted(script, i, ch, escapes);
      emit(script.slice(i, end));
      i = end;
    } else if (ch === '$') {
      const tag = /^\$([A-Za-z_][A-Za-z0-9_]*)?\$/.exec(script.slice(i));
      if (tag && !/[A-Za-z0-9_]/.test(script[i - 1] ?? '')) {
        const close = script.indexOf(tag[0], i + tag[0].length);
        const end = close === -1 ? script.length : close + tag[0].length;
        emit(script.slice(i, end));
        i = end;
      } else {
        emit(ch);
        i += 1;
      }
    } else if (ch === ';') {
      finish(i);
      i += 1;
    } else if (/\s/.test(ch)) {
      pendingSpace = true;
      i += 1;
    } else {
      emit(ch);
      i += 1;
    }
  }
  finish(script.length);
  return statements;
}

function skipBlockComment(script: string, from: number): number {
  let depth = 0;
  let i = from;
  while (i < script.length) {
    if (script.startsWith('/*', i)) {
      depth += 1;
      i += 2;
    } else if (script.startsWith('*/', i)) {
      depth -= 1;
      i += 2;
      if (depth === 0) return i;
    } else {
      i += 1;
    }
  }
  return script.length;
}

function skipQuoted(script: string, from: number, quote: string, backslashEscapes: boolean): number {
  let i = from + 1;
  while (i < script.length) {
    const ch = script[i];
    if (backslashEscapes && ch === '\\') {
      i += 2;
    } else if (ch === quote) {
      if (script[i + 1] === quote) i += 2;
      else return i + 1;
    } else {
      i += 1;
    }
  }
  return script.length;
}

/** The normalised text of a whole script, for comparing an applied migration with its file. */
export function normalizeSqlScript(script: string): string {
  return splitSqlStatements(script)
    .map((statement) => statement.normalized)
    .join(';\n');
}
