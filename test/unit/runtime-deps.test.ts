import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import { builtinModules } from 'node:module';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
/** What the published package ships as code (package.json "files"). */
const SHIPPED = ['dist/src', 'dist/middleware'];

async function jsFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await jsFiles(path)));
    else if (entry.name.endsWith('.js')) out.push(path);
  }
  return out;
}

/** The package a bare specifier names: `pkg`, `pkg/sub` → `pkg`, `@scope/pkg/sub` → `@scope/pkg`. */
function packageOf(specifier: string): string {
  const parts = specifier.split('/');
  return specifier.startsWith('@') ? parts.slice(0, 2).join('/') : (parts[0] as string);
}

/** Static imports and re-exports, dynamic imports: every module specifier a compiled file names. */
const SPECIFIER = /(?:^\s*(?:import|export)\b[^'"`;]*?\bfrom\s*|^\s*import\s*|\bimport\s*\(\s*)(['"])([@\w./:-]+)\1/gm;

describe('runtime dependencies', () => {
  it('every package the shipped code imports is in "dependencies", not only in devDependencies', async () => {
    const pkg = JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')) as {
      dependencies?: Record<string, string>;
    };
    const deps = new Set(Object.keys(pkg.dependencies ?? {}));
    const builtins = new Set(builtinModules);
    const missing = new Map<string, string>();
    let files = 0;
    for (const dir of SHIPPED) {
      for (const file of await jsFiles(join(ROOT, dir))) {
        files++;
        const text = await readFile(file, 'utf8');
        for (const m of text.matchAll(SPECIFIER)) {
          const spec = m[2] as string;
          if (spec.startsWith('.') || spec.startsWith('/') || spec.startsWith('node:')) continue;
          const name = packageOf(spec);
          if (builtins.has(name) || deps.has(name)) continue;
          missing.set(name, file.slice(ROOT.length));
        }
      }
    }
    assert.ok(files > 20, `compiled code found under ${SHIPPED.join(', ')}`);
    assert.deepEqual(Object.fromEntries(missing), {}, 'imported by shipped code but not a runtime dependency');
  });
});
