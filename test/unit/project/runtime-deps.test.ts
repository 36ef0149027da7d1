import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { REPO_ROOT, sourceFiles } from '../../../testkit/source-files.js';

/**
 * What an application installs with mirrorswap is `dependencies` and nothing
 * else: every package the shipped code (src/, middleware/) loads at run time
 * must be listed there, or `import 'mirrorswap'` fails in a production
 * install; and Express, which the tests and benchmarks use as a fixture app,
 * must not be one of them (an application brings its own, or none).
 */

const ROOT = REPO_ROOT;
const sources = sourceFiles;

/** `import … from 'x'` and `export … from 'x'` statements: what they bring in, and the specifier. */
const FROM = /^[ \t]*(import|export)\b([^'";]*?)\bfrom\s*['"]([^'"]+)['"]/gm;
/** `import 'x'` (for its effects) and `import('x')` (at run time; `import('x').T` in a type is none). */
const BARE = /^[ \t]*import\s*['"]([^'"]+)['"]|\bimport\(\s*['"]([^'"]+)['"]\s*\)(?!\s*\.)/gm;

/** Type-only: `import type …`, `export type …`, or braces naming only types (`{ type A, type B }`). */
function typeOnly(clause: string): boolean {
  const c = clause.trim();
  if (/^type\b/.test(c)) return true;
  const braces = /^\{([^}]*)\}$/.exec(c);
  if (!braces) return false;
  const names = (braces[1] as string)
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  return names.length > 0 && names.every((n) => /^type\s/.test(n));
}

/** The package a bare specifier names (`pkg/sub` → `pkg`, `@scope/pkg/sub` → `@scope/pkg`); null for others. */
function packageOf(specifier: string): string | null {
  if (specifier.startsWith('.') || specifier.startsWith('/') || specifier.startsWith('node:')) return null;
  const parts = specifier.split('/');
  return specifier.startsWith('@') ? parts.slice(0, 2).join('/') : (parts[0] as string);
}

/** Each package the shipped sources load at run time, with the files that load it. */
function runtimeImports(): Map<string, string[]> {
  const found = new Map<string, string[]>();
  const add = (pkg: string | null, file: string) => {
    if (pkg) found.set(pkg, [...(found.get(pkg) ?? []), file]);
  };
  for (const file of [...sources('src'), ...sources('middleware')]) {
    const text = readFileSync(join(ROOT, file), 'utf8');
    for (const m of text.matchAll(FROM)) if (!typeOnly(m[2] as string)) add(packageOf(m[3] as string), file);
    for (const m of text.matchAll(BARE)) add(packageOf((m[1] ?? m[2]) as string), file);
  }
  return found;
}

describe('runtime dependencies', () => {
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as {
    dependencies?: Record<string, string>;
  };
  const declared = new Set(Object.keys(pkg.dependencies ?? {}));
  const imports = runtimeImports();

  it('finds the imports it is meant to check', () => {
    // a scan that matched nothing would pass whatever the sources did
    for (const known of ['pino', 'prom-client', 'tar-stream']) assert.ok(imports.has(known), `no import of ${known}`);
  });

  it('tells type-only imports from runtime ones', () => {
    assert.equal(typeOnly(' type { Registry } '), true);
    assert.equal(typeOnly(' { type Registry, type Counter } '), true);
    assert.equal(typeOnly(' { Counter, type Registry } '), false);
    assert.equal(typeOnly(' express, { type Request } '), false);
    assert.equal(packageOf('@scope/pkg/sub'), '@scope/pkg');
    assert.equal(packageOf('pkg/sub'), 'pkg');
    assert.equal(packageOf('node:fs/promises'), null);
  });

  it('every package src/ and middleware/ load at run time is in dependencies', () => {
    const missing = [...imports]
      .filter(([name]) => !declared.has(name))
      .map(([name, files]) => `${name} (${[...new Set(files)].join(', ')})`);
    assert.deepEqual(missing, [], `imported at run time but not in "dependencies":\n${missing.join('\n')}`);
  });

  it('express is not loaded at run time, nor a dependency', () => {
    assert.equal(imports.has('express'), false, `express imported by ${imports.get('express')?.join(', ')}`);
    assert.equal(declared.has('express'), false);
  });
});
