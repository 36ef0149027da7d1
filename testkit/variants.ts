import { mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join, posix } from 'node:path';
import { brotliCompressSync, gzipSync } from 'node:zlib';
import {
  type FileRecord,
  VARIANT_SUFFIX,
  type VariantEncoding,
  type VariantRecord,
  contentHash,
  readDirectoryIndexSync,
  writeDirectoryIndexSync,
} from '../src/store/content-index.js';
import { TEMP_DIR_NAME } from '../src/store/store-layout.js';

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
    const variants: Partial<Record<VariantEncoding, VariantRecord>> = {};
    for (const encoding of encodings) {
      const encoded = COMPRESS[encoding](bytes);
      writeFileSync(path + VARIANT_SUFFIX[encoding], encoded);
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
