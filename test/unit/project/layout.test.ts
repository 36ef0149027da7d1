import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { describe, it } from 'node:test';
import { REPO_ROOT, sourceFiles } from '../../../testkit/source-files.js';

/**
 * The house rules, drawn from the sources' own imports: every room is a
 * folder, rooms are ranked, and no import runs from a lower room into a
 * higher one (nor between two rooms of the same rank), and no file imports
 * itself back through others, type imports included.
 */

const ROOT = REPO_ROOT;
const sources = sourceFiles;

/** Rooms, lowest first: a file may import its own room and lower ranks only. */
const ROOMS: [prefix: string, rank: number][] = [
  ['src/core/', 0],
  ['src/store/', 1],
  ['src/tree/', 2],
  ['middleware/', 3],
  ['src/fleet/', 4],
  ['src/agent/', 5],
  ['src/nginx/', 5],
  ['src/server/', 6],
  ['src/cli/', 7],
  ['src/index.ts', 8],
];

function roomOf(file: string): [string, number] {
  const room = ROOMS.find(([prefix]) => file.startsWith(prefix));
  if (!room) throw new Error(`${file} lies in no room: put it in one of ${ROOMS.map(([p]) => p).join(', ')}`);
  return room;
}

const IMPORT = /(?:\bfrom\s*|\bimport\s*\(\s*|\bimport\s+)['"](\.{1,2}\/[^'"]+)['"]/g;
/** A module started as a thread of its own (`new Worker(new URL(...))`): a dependency, not an import. */
const THREAD = /new URL\(\s*['"](\.{1,2}\/[^'"]+)['"]/g;

/**
 * Each source file and the project files it imports (relative specifiers,
 * resolved to .ts); with `threads`, also the modules it starts as threads.
 */
function importGraph(threads: boolean): Map<string, string[]> {
  const graph = new Map<string, string[]>();
  for (const file of [...sources('src'), ...sources('middleware')]) {
    const text = readFileSync(join(ROOT, file), 'utf8');
    const targets = new Set<string>();
    for (const m of [...text.matchAll(IMPORT), ...(threads ? text.matchAll(THREAD) : [])]) {
      const target = relative(ROOT, resolve(ROOT, dirname(file), m[1] as string)).replace(/\.js$/, '.ts');
      if (target.endsWith('.ts')) targets.add(target);
    }
    graph.set(file, [...targets]);
  }
  return graph;
}

/** The strongly connected components of more than one file (Tarjan), and self-imports. */
function cycles(graph: Map<string, string[]>): string[][] {
  let index = 0;
  const stack: string[] = [];
  const on = new Set<string>();
  const idx = new Map<string, number>();
  const low = new Map<string, number>();
  const found: string[][] = [];
  const visit = (v: string) => {
    idx.set(v, index);
    low.set(v, index++);
    stack.push(v);
    on.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!graph.has(w)) continue;
      if (!idx.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v) as number, low.get(w) as number));
      } else if (on.has(w)) low.set(v, Math.min(low.get(v) as number, idx.get(w) as number));
    }
    if (low.get(v) === idx.get(v)) {
      const scc: string[] = [];
      let w: string;
      do {
        w = stack.pop() as string;
        on.delete(w);
        scc.push(w);
      } while (w !== v);
      if (scc.length > 1 || (graph.get(v) ?? []).includes(v)) found.push(scc.sort());
    }
  };
  for (const v of graph.keys()) if (!idx.has(v)) visit(v);
  return found;
}

describe('the layout: rooms, ranks and no circles', () => {
  const graph = importGraph(true);

  it('every import resolves to a file of the project', () => {
    for (const [file, targets] of graph)
      for (const t of targets) assert.ok(existsSync(join(ROOT, t)), `${file} imports ${t}, which does not exist`);
  });

  it('no import runs from a lower room into a higher one, nor across rooms of one rank', () => {
    const wrong: string[] = [];
    for (const [file, targets] of graph) {
      const [room, rank] = roomOf(file);
      for (const t of targets) {
        const [troom, trank] = roomOf(t);
        if (troom !== room && trank >= rank) wrong.push(`${file} (${room}) -> ${t} (${troom})`);
      }
    }
    assert.deepEqual(wrong, [], `imports against the rooms' order:\n${wrong.join('\n')}`);
  });

  it('the fleet imports nothing from the agent', () => {
    for (const [file, targets] of graph)
      if (file.startsWith('src/fleet/'))
        for (const t of targets) assert.ok(!t.startsWith('src/agent/'), `${file} imports ${t}`);
  });

  it('no file imports itself back through others (type imports included)', () => {
    // a thread's module is loaded apart from its starter's: starting one closes no circle
    const found = cycles(importGraph(false));
    assert.deepEqual(found, [], `import circles:\n${found.map((c) => c.join(' <-> ')).join('\n')}`);
  });

  it('every room has a README that says what lives there', () => {
    const dirs = new Set<string>();
    for (const file of graph.keys()) dirs.add(dirname(file));
    for (const dir of dirs) {
      const readme = join(ROOT, dir, 'README.md');
      assert.ok(existsSync(readme), `${dir} has no README.md`);
      assert.ok(readFileSync(readme, 'utf8').trim().length > 80, `${dir}/README.md says too little`);
    }
  });

  it('every path the README\'s "Where things live" table names exists', () => {
    const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
    const section = readme.slice(readme.indexOf('## Where things live'));
    const table = section.slice(0, section.indexOf('\n## ', 5));
    const paths = [...table.matchAll(/`((?:src|middleware|test|testkit|bench|docs|deploy)\/[^`]*)`/g)].map(
      (m) => m[1] as string,
    );
    assert.ok(paths.length >= 10, `the table names only ${paths.length} paths`);
    for (const p of paths)
      assert.ok(existsSync(join(ROOT, p)), `README's "Where things live" names ${p}, which does not exist`);
  });

  it('the benchmarks import the testkit, never the tests', () => {
    for (const file of sources('bench')) {
      const text = readFileSync(join(ROOT, file), 'utf8');
      for (const m of text.matchAll(IMPORT)) {
        const target = relative(ROOT, resolve(ROOT, dirname(file), m[1] as string));
        assert.ok(!target.startsWith('test/'), `${file} imports ${target}`);
      }
    }
  });
});
