import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

/**
 * The layers point one way: core/ is what every side shares and imports only itself;
 * functions/ (HTTP) and scheduled/ (jobs) build on core/ and not on each other; the composition
 * roots (cli/, worker.ts) put them together. Every relative import, re-export and import() of
 * the code is checked against this table (packages are not: only the repository's own files).
 */
const ALLOWED: Record<string, readonly string[]> = {
  core: ['core'],
  functions: ['core', 'functions'],
  scheduled: ['core', 'scheduled'],
  cli: ['core', 'functions', 'scheduled', 'cli'],
  'worker.ts': ['core', 'functions', 'scheduled'],
};

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const CODE = /\.(ts|mts|mjs|js)$/;

/** Every module specifier of a source text: static imports and re-exports, import() and require() of a string. */
export function specifiersOf(source: string): { specifiers: string[]; unresolvable: string[] } {
  const specifiers: string[] = [];
  // at a line's start (so never inside a comment's text): `import … from 'x'`, `export … from 'x'`, `import 'x'`
  for (const match of source.matchAll(/^[ \t]*(?:import|export)\b[^;'"`]*?\bfrom\s*(['"])([^'"]+)\1/gm)) specifiers.push(match[2]!);
  for (const match of source.matchAll(/^[ \t]*import\s*(['"])([^'"]+)\1/gm)) specifiers.push(match[2]!);
  // anywhere: import('x') (also `typeof import('x')` in types) and require('x')
  for (const match of source.matchAll(/\b(?:import|require)\s*\(\s*(['"`])([^'"`$]+)\1\s*\)/g)) specifiers.push(match[2]!);
  // an import() of anything but a plain string cannot be checked, so it is not allowed
  const unresolvable = [...source.matchAll(/\bimport\s*\((?!\s*(['"`])[^'"`$]+\1\s*\))\s*([^)\n]{0,60})/g)].map((match) => match[2]!.trim());
  return { specifiers, unresolvable };
}

/** The layer a repository path belongs to: its top folder, or the file itself at the top. */
const layerOf = (relative: string) => relative.split(path.sep)[0]!;

function filesUnder(layer: string): string[] {
  const start = path.join(ROOT, layer);
  if (CODE.test(layer)) return [start];
  return readdirSync(start, { recursive: true, encoding: 'utf8' })
    .filter((name) => CODE.test(name))
    .map((name) => path.join(start, name));
}

interface Scan {
  files: number;
  imports: number;
  offences: string[];
}

function scan(layer: string): Scan {
  const result: Scan = { files: 0, imports: 0, offences: [] };
  for (const file of filesUnder(layer)) {
    result.files += 1;
    const from = path.relative(ROOT, file);
    const { specifiers, unresolvable } = specifiersOf(readFileSync(file, 'utf8'));
    for (const expression of unresolvable) result.offences.push(`${from}: import(${expression}…) is not a string, so it cannot be checked`);
    for (const specifier of specifiers.filter((s) => s.startsWith('.'))) {
      result.imports += 1;
      const target = path.relative(ROOT, path.resolve(path.dirname(file), specifier));
      const targetLayer = target.startsWith('..') ? '(outside the repository)' : layerOf(target);
      if (!ALLOWED[layer]!.includes(targetLayer)) result.offences.push(`${from} imports ${specifier} (${targetLayer}/)`);
    }
  }
  return result;
}

describe('layers', () => {
  it('finds every kind of import it checks', () => {
    const source = [
      "import { a,\n  b } from '../functions/app.ts';",
      "import type { C } from '../scheduled/job.ts';",
      "export { d } from './d.ts';",
      "export * from '../cli/main.ts';",
      "import './side-effect.ts';",
      "type M = typeof import('../worker.ts');",
      "const lazy = await import(\n  '../bench/x.ts'\n);",
      "const computed = await import(name);",
      '// a comment that says import x from "./nothing.ts" is no import',
      " * nor is this: import y from './doc.ts'",
    ].join('\n');
    const { specifiers, unresolvable } = specifiersOf(source);
    expect(specifiers.sort()).toEqual(
      ['../functions/app.ts', '../scheduled/job.ts', './d.ts', '../cli/main.ts', './side-effect.ts', '../worker.ts', '../bench/x.ts'].sort(),
    );
    expect(unresolvable).toEqual(['name']);
  });

  for (const [layer, allowed] of Object.entries(ALLOWED)) {
    it(`${layer} imports only ${allowed.join(', ')}`, () => {
      const result = scan(layer);
      // not vacuous: the walk found the layer's files and their imports
      const least = { core: [25, 50], functions: [15, 80], scheduled: [5, 12], cli: [4, 25], 'worker.ts': [1, 3] }[layer]!;
      expect(result.files).toBeGreaterThanOrEqual(least[0]!);
      expect(result.imports).toBeGreaterThanOrEqual(least[1]!);
      expect(result.offences).toEqual([]);
    });
  }
});
