/**
 * Untrusted JSON, bounded before anything recurses over it. JSON.parse accepts nesting far
 * deeper than JSON.stringify, zod or a recursive walk can handle, strings Postgres cannot store
 * (a NUL, or half of a surrogate pair, which jsonb and text both refuse), and numbers it cannot
 * write back (1e400 parses as Infinity). Everything here
 * walks with an explicit stack, so no input can overflow the call stack.
 */
export interface JsonProblem {
  code: 'too_deep' | 'too_large' | 'invalid_characters' | 'invalid_number';
  /** where, as a dotted path ("properties.a.0") */
  path: string;
  message: string;
}

export interface JsonBounds {
  /** containers within containers; the value itself is depth 1 when it is an object or array */
  maxDepth: number;
  /** values in all (objects, arrays, strings, numbers, ...) */
  maxNodes: number;
}

/** A string Postgres can store: no NUL, no unpaired surrogate. */
export function isStorableText(text: string): boolean {
  return text.isWellFormed() && !text.includes('\u0000');
}

/** The same string with what Postgres refuses replaced by U+FFFD (for failed-event payloads). */
export function storableText(text: string): string {
  return isStorableText(text) ? text : text.toWellFormed().replaceAll('\u0000', '\uFFFD');
}

/** The first problem of a parsed JSON value (keys and strings checked, depth and size bounded), or null. */
export function inspectJson(value: unknown, bounds: JsonBounds): JsonProblem | null {
  const stack: Array<{ value: unknown; depth: number; path: string[] }> = [{ value, depth: 0, path: [] }];
  let nodes = 0;
  while (stack.length > 0) {
    const { value: current, depth, path } = stack.pop()!;
    nodes += 1;
    if (nodes > bounds.maxNodes) {
      return { code: 'too_large', path: path.join('.'), message: `at most ${bounds.maxNodes} values in one event` };
    }
    if (typeof current === 'string') {
      if (!isStorableText(current)) return invalidCharacters(path);
      continue;
    }
    // JSON.parse reads 1e400 as Infinity, which JSON cannot write back: it would be stored as null
    if (typeof current === 'number' && !Number.isFinite(current)) {
      return { code: 'invalid_number', path: path.join('.'), message: `${path.join('.') || 'a number'} is beyond what JSON can carry (a finite double)` };
    }
    if (current === null || typeof current !== 'object') continue;
    if (depth + 1 > bounds.maxDepth) {
      return { code: 'too_deep', path: path.join('.'), message: `nested at most ${bounds.maxDepth} levels` };
    }
    const entries: Array<[string, unknown]> = Array.isArray(current)
      ? current.map((item, index) => [String(index), item])
      : Object.entries(current);
    for (const [key, child] of entries) {
      if (!isStorableText(key)) return invalidCharacters([...path, storableText(key)]);
      stack.push({ value: child, depth: depth + 1, path: [...path, key] });
    }
  }
  return null;
}

function invalidCharacters(path: string[]): JsonProblem {
  return {
    code: 'invalid_characters',
    path: path.join('.'),
    message: `${path.join('.') || 'the value'} holds a NUL character or an unpaired UTF-16 surrogate, which cannot be stored`,
  };
}

/** Nesting depth of a value already known to be bounded (see inspectJson). */
export function jsonDepth(value: unknown): number {
  let deepest = 0;
  const stack: Array<[unknown, number]> = [[value, 0]];
  while (stack.length > 0) {
    const [current, depth] = stack.pop()!;
    if (current === null || typeof current !== 'object') continue;
    deepest = Math.max(deepest, depth + 1);
    for (const child of Array.isArray(current) ? current : Object.values(current)) stack.push([child, depth + 1]);
  }
  return deepest;
}

/**
 * JSON text of any parsed value, safe for a failed-event payload: levels beyond maxDepth become
 * "…", and what Postgres cannot store is replaced. Never throws.
 */
export function boundedJson(value: unknown, maxDepth = 16): string {
  const cut = (current: unknown, depth: number): unknown => {
    if (typeof current === 'string') return storableText(current);
    if (current === null || typeof current !== 'object') return current;
    if (depth >= maxDepth) return '…';
    if (Array.isArray(current)) return current.map((item) => cut(item, depth + 1));
    return Object.fromEntries(Object.entries(current).map(([key, item]) => [storableText(key), cut(item, depth + 1)]));
  };
  try {
    return JSON.stringify(cut(value, 0)) ?? 'null';
  } catch {
    return '"(not representable as JSON)"';
  }
}

/** Depth of the stub that stands for a cut subtree: deeper than any event may nest, so still refused. */
const CUT_STUB_DEPTH = 16;

/**
 * A copy of a parsed value in which every container at depth maxDepth is replaced by a stub
 * nested CUT_STUB_DEPTH levels: what is left is bounded (safe to walk), and an event holding a
 * cut is still refused as too deep, by its own path, while its siblings are read as sent.
 */
export function cutDeeperThan(value: unknown, maxDepth: number): unknown {
  const stub = () => JSON.parse('['.repeat(CUT_STUB_DEPTH) + ']'.repeat(CUT_STUB_DEPTH)) as unknown;
  const copy = (current: unknown): unknown =>
    current === null || typeof current !== 'object' ? current : Array.isArray(current) ? [...current] : { ...current };
  const root = copy(value);
  const stack: Array<[Record<string, unknown> | unknown[], number]> = [];
  if (root !== null && typeof root === 'object') stack.push([root as Record<string, unknown>, 1]);
  while (stack.length > 0) {
    const [container, depth] = stack.pop()!;
    for (const key of Object.keys(container)) {
      const child = (container as Record<string, unknown>)[key];
      if (child === null || typeof child !== 'object') continue;
      const next = depth + 1 > maxDepth ? stub() : copy(child);
      (container as Record<string, unknown>)[key] = next;
      if (depth + 1 <= maxDepth) stack.push([next as Record<string, unknown>, depth + 1]);
    }
  }
  return root;
}
