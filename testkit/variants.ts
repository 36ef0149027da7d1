import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { msInside } from '../src/tree/copy-times.js';
import { open, readFile, readdir, stat } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { brotliCompressSync, brotliDecompressSync, gunzipSync, gzipSync } from 'node:zlib';
import {
  type FileRecord,
  VARIANT_SUFFIX,
  type VariantEncoding,
  type VariantRecord,
  contentHash,
  readDirectoryIndexSync,
  stampMatches,
  variantMatches,
  writeDirectoryIndexSync,
} from '../src/store/content-index.js';
import { readCopyIndex } from '../src/store/recent-records.js';
import { TEMP_DIR_NAME, isReservedRootName } from '../src/store/store-layout.js';
import { TREE_DEFAULTS } from '../src/tree/tree-defaults.js';
import { TreeCopier } from '../src/tree/tree-copy.js';
import { type TempStore, tempStore } from './store.js';

/** Text that compresses well, different for each seed: a file worth a variant. */
export function compressibleText(seed: string, bytes = 8192): string {
  let out = '';
  for (let i = 0; out.length < bytes; i++) out += `function ${seed}_${i}(a, b) { return a + b * ${i}; }\n`;
  return out.slice(0, bytes);
}

/**
 * Check the copy at `root` as a server would trust it: every record whose
 * stamp matches its file has that file's hash, and every variant it names
 * whose stamp matches has its hash and decodes to exactly the file; every
 * `X.br`/`X.gz` file beside a file `X` that the index names as a made
 * variant decodes to X. Returns how many variants were checked.
 */
export async function checkCopyIndex(root: string, dir = ''): Promise<number> {
  let checked = 0;
  const index = await readCopyIndex(root, dir);
  const entries = await readdir(join(root, dir), { withFileTypes: true });
  for (const e of entries) {
    if (dir === '' && isReservedRootName(e.name)) continue;
    const rel = dir === '' ? e.name : `${dir}/${e.name}`;
    if (e.isDirectory()) {
      checked += await checkCopyIndex(root, rel);
      continue;
    }
    const record = index?.files[e.name];
    if (!record || !e.isFile()) continue;
    const st = await stat(join(root, rel));
    if (!stampMatches(record, st)) continue; // stale: a reader ignores it
    const bytes = await readFile(join(root, rel));
    assert.equal(record.sha256, contentHash(bytes), `${rel}: a current record has the file's hash`);
    for (const [encoding, variant] of Object.entries(record.variants ?? {})) {
      const vpath = join(root, rel + VARIANT_SUFFIX[encoding as VariantEncoding]);
      const vst = await stat(vpath).catch(() => null);
      if (!vst || !variantMatches(variant, vst)) continue;
      const vbytes = await readFile(vpath);
      assert.equal(variant.sha256, contentHash(vbytes), `${rel}: ${encoding} hash`);
      const decoded = encoding === 'br' ? brotliDecompressSync(vbytes) : gunzipSync(vbytes);
      assert.ok(decoded.equals(bytes), `${rel}.${encoding} decodes to ${rel}`);
      checked++;
    }
  }
  return checked;
}

const COMPRESS: Record<VariantEncoding, (b: Buffer) => Buffer> = {
  br: (b) => brotliCompressSync(b),
  gzip: (b) => gzipSync(b),
};

/**
 * For tests of the servers: write `X.br` and `X.gz` beside each of
 * `relPaths` (paths in the copy at `slotRoot`) and record them, with each
 * file's hash, in their directories' content indexes, as the agent does at
 * sync. `encodings: []` records hashes only.
 */
export function writeVariantsFor(
  slotRoot: string,
  relPaths: readonly string[],
  encodings: readonly VariantEncoding[] = ['br', 'gzip'],
): void {
  mkdirSync(join(slotRoot, TEMP_DIR_NAME), { recursive: true });
  const byDir = new Map<string, Record<string, FileRecord>>();
  for (const rel of relPaths) {
    const dir = posix.dirname(rel) === '.' ? '' : posix.dirname(rel);
    let files = byDir.get(dir);
    if (files === undefined) {
      files = { ...(readDirectoryIndexSync(slotRoot, dir)?.files ?? {}) };
      byDir.set(dir, files);
    }
    const path = join(slotRoot, rel);
    const bytes = readFileSync(path);
    const original = statSync(path);
    const variants: Partial<Record<VariantEncoding, VariantRecord>> = {};
    for (const encoding of encodings) {
      const encoded = COMPRESS[encoding](bytes);
      writeFileSync(path + VARIANT_SUFFIX[encoding], encoded);
      // a made variant has its original's mtime, as the agent gives it (docs/CONTRACT.md)
      utimesSync(path + VARIANT_SUFFIX[encoding], msInside(original.atimeMs), msInside(original.mtimeMs));
      const vst = statSync(path + VARIANT_SUFFIX[encoding]);
      variants[encoding] = { ino: vst.ino, size: vst.size, sha256: contentHash(encoded), made: true };
    }
    const st = statSync(path);
    files[posix.basename(rel)] = {
      ino: st.ino,
      size: st.size,
      mtimeMs: st.mtimeMs,
      sha256: contentHash(bytes),
      ...(encodings.length > 0 ? { variants } : {}),
    };
  }
  for (const [dir, files] of byDir) writeDirectoryIndexSync(slotRoot, dir, files);
}

/**
 * A temp store (pushed onto `stores`, for the caller to dispose of) whose
 * master holds `d/app.js` and `d/b.js`, copied into slot a with variants
 * and its content index; `copier()` makes a copier of master into slot a
 * with the default variant settings, for the copies that follow.
 */
export async function indexedSlot(
  stores: TempStore[],
): Promise<{ store: TempStore; a: string; copier: () => TreeCopier }> {
  const store = await tempStore();
  stores.push(store);
  const a = store.slots.a;
  await store.fill('master', { 'd/app.js': compressibleText('v0 app'), 'd/b.js': compressibleText('v0 b') });
  const settings = TREE_DEFAULTS.variantSettings;
  const copier = () => new TreeCopier(store.master, a, { durable: false, variants: { settings, other: null } });
  await copier().mirrorAll();
  return { store, a, copier };
}

/** Rewrite `path` in place (same inode, same size): one byte near its end flipped, as drift would. */
export async function flipInPlace(path: string): Promise<void> {
  const bytes = await readFile(path);
  (bytes[bytes.length - 5] as number) ^= 0xff;
  const handle = await open(path, 'r+');
  try {
    await handle.write(bytes, 0, bytes.length, 0);
  } finally {
    await handle.close();
  }
}
