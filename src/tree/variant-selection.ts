import { lstatSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { META_DIR_NAME, dropMetaFileSync, replaceMetaFileSync } from '../store/content-index.js';
import { readSmallFileSync } from '../store/read-small-file.js';
import type { VariantSettings } from './compressible.js';

/**
 * Which variants a copy holds is decided by four settings: the codings, the
 * types, the size floor and the saving a variant must make. A derive brings
 * only what a copy changed up to date, so a copy would keep serving what
 * settings since dropped (a coding turned off, a type removed) and lack what
 * they added, until each file changed. The copy therefore records the
 * selection its variants follow (`.mirrorswap-meta/variant-selection.json`),
 * and a copy whose record is not the agent's selection is derived whole by
 * its next sync (tree-copy.ts), after which the record is rewritten.
 *
 * Levels are not part of it: a variant made at another level decodes to the
 * same original, and remaking every variant of a tree for a level would cost
 * a full compression of it. A new level applies to what is compressed from
 * then on.
 *
 * The record is not made durable: one lost or torn says nothing, which reads
 * as another selection and costs one derive of the whole copy.
 */

/** The canonical form of the selection of `settings`: equal strings, equal selections. */
export function variantSelection(settings: VariantSettings): string {
  return JSON.stringify({
    v: 1,
    encodings: [...new Set(settings.encodings)].sort(),
    types: [...new Set(settings.types)].sort(),
    minSize: settings.minSize,
    minSavingPercent: settings.minSavingPercent,
  });
}

/** Where a copy keeps its selection. */
export function variantSelectionPath(slotRoot: string): string {
  return join(slotRoot, META_DIR_NAME, 'variant-selection.json');
}

/** Largest record read: a few hundred bytes for any real list of types. */
const SELECTION_MAX_BYTES = 64 * 1024;

/** The selection recorded by the copy at `slotRoot`; null when none can be read (never written, removed, torn). */
export function recordedVariantSelectionSync(slotRoot: string): string | null {
  try {
    // only the copy's own: a meta directory made a link (drift) leads to another copy's record, and
    // the derive replaces it by a directory of its own, with no index, at the next write
    if (!lstatSync(join(slotRoot, META_DIR_NAME), { throwIfNoEntry: false })?.isDirectory()) return null;
    return readSmallFileSync(variantSelectionPath(slotRoot), SELECTION_MAX_BYTES)?.toString('utf8') ?? null;
  } catch {
    return null; // a directory or a link there (drift), a file too large: not a record
  }
}

/**
 * The selection of `settings` when the copy at `slotRoot` records another
 * (or none it can read): what a derive of the whole copy must bring it to,
 * and record. Null when the copy follows it.
 */
export function staleVariantSelectionSync(slotRoot: string, settings: VariantSettings): string | null {
  const wanted = variantSelection(settings);
  return recordedVariantSelectionSync(slotRoot) === wanted ? null : wanted;
}

/**
 * Record `selection` as the one the copy at `slotRoot` follows, through the
 * copy's temp directory (which must exist), renamed over the last record.
 */
export function recordVariantSelectionSync(slotRoot: string, selection: string): void {
  replaceMetaFileSync(slotRoot, variantSelectionPath(slotRoot), 'selection', (tmp) =>
    writeFileSync(tmp, selection, { flag: 'wx', mode: 0o644 }),
  );
}

/**
 * Remove the record of the copy at `slotRoot`, before a derive for another
 * selection writes anything: one cut short (a failure, a crash) leaves the
 * copy following neither selection, and a record of the old one would let a
 * sync back to it keep what the derive made for the new one.
 */
export function forgetVariantSelectionSync(slotRoot: string): void {
  dropMetaFileSync(slotRoot, variantSelectionPath(slotRoot));
}
