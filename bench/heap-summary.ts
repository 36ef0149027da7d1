/**
 * What a V8 heap snapshot holds, by kind and constructor (self sizes), the
 * largest first: `node dist/bench/heap-summary.js <file.heapsnapshot> [rows]`.
 * Written by `bench/serve-target.ts` under `MIRRORSWAP_HEAP_SNAPSHOT=<dir>`.
 */
import { readFileSync } from 'node:fs';

interface Snapshot {
  snapshot: { meta: { node_fields: string[]; node_types: [string[], ...unknown[]] } };
  nodes: number[];
  strings: string[];
}

const [file, rowsArg] = process.argv.slice(2);
if (!file) {
  console.error('usage: heap-summary.js <file.heapsnapshot> [rows]');
  process.exit(2);
}
const snap = JSON.parse(readFileSync(file, 'utf8')) as Snapshot;
const fields = snap.snapshot.meta.node_fields;
const types = snap.snapshot.meta.node_types[0];
const width = fields.length;
const typeAt = fields.indexOf('type');
const nameAt = fields.indexOf('name');
const sizeAt = fields.indexOf('self_size');
const groups = new Map<string, { count: number; bytes: number }>();
let total = 0;
for (let i = 0; i < snap.nodes.length; i += width) {
  const type = types[snap.nodes[i + typeAt] as number] as string;
  const bytes = snap.nodes[i + sizeAt] as number;
  // objects by constructor; strings, code, arrays and the rest by kind
  const name =
    type === 'object' || type === 'closure' ? `${type} ${snap.strings[snap.nodes[i + nameAt] as number]}` : type;
  const group = groups.get(name) ?? { count: 0, bytes: 0 };
  group.count++;
  group.bytes += bytes;
  groups.set(name, group);
  total += bytes;
}
const rows = [...groups].sort((a, b) => b[1].bytes - a[1].bytes).slice(0, Number(rowsArg ?? 30));
console.log(`total ${(total / 2 ** 20).toFixed(1)} MiB`);
for (const [name, { count, bytes }] of rows) {
  console.log(`${(bytes / 2 ** 20).toFixed(2).padStart(8)} MiB ${String(count).padStart(9)}  ${name.slice(0, 100)}`);
}
