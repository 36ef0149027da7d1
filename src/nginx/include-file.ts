import { writeFileAtomic } from '../store/atomic-write.js';
import type { SlotName } from '../store/store-layout.js';
import { RESERVED_ROOT_NAMES } from '../store/store-layout.js';

/**
 * The nginx include the companion owns: placed inside a `server { }` block,
 * it sets the document root to the mounted copy. Rewritten whole, by
 * rename, on each epoch; nginx reads it only when it (re)loads its
 * configuration, so a worker serves one copy from start to end.
 */
export function renderInclude(epoch: number, slot: SlotName, root: string): string {
  if (/[;{}"'\\\s$]/.test(root)) {
    // a root nginx would read as more than one token (or as a variable) is refused, not quoted
    throw new Error(`slot ${slot}'s root "${root}" holds a character nginx would misread: move the store`);
  }
  return [
    `# Written by mirrorswap nginx: epoch ${epoch} mounts slot ${slot}. Do not edit: it is rewritten on every swap.`,
    `root ${root};`,
    `set $mirrorswap_epoch ${epoch};`,
    `set $mirrorswap_slot ${slot};`,
    // the copier's temp directory and the agent's content index are never served, whatever the rest says
    ...RESERVED_ROOT_NAMES.map((name) => `location ^~ /${name}/ { return 404; }`),
    // the precompressed siblings the agent made at sync (app.js.gz), sent to clients that accept gzip,
    // with Vary: Accept-Encoding; brotli_static needs a module nginx may not have: see the README
    'gzip_static on;',
    'gzip_vary on;',
    '',
  ].join('\n');
}

/** Write the include atomically (temp file, fsync, rename, fsync of the directory). */
export async function writeInclude(file: string, epoch: number, slot: SlotName, root: string): Promise<void> {
  await writeFileAtomic(file, renderInclude(epoch, slot, root), { durable: true, mode: 0o644 });
}
