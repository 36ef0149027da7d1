import { COMPRESSIBLE_EXTENSIONS, type VariantSettings } from './compressible.js';

/**
 * The tree engine's defaults. The agent's and the host agent's tables take
 * theirs from here, so a copy made without an explicit setting behaves as the
 * agent's default says.
 */
export const TREE_DEFAULTS = Object.freeze({
  /** fsync copied files and changed directories before a copy returns. */
  durable: true,
  /** Make precompressed variants of the files copied, and their content index. */
  variants: true,
  /**
   * How variants are made. Brotli quality 5 and gzip level 6: measured on
   * text (bench/variants.ts, bench/README.md), quality 5 compresses about as
   * well as 9 at a twentieth of the time, and 11 saves a tenth more for
   * forty times the cost; gzip 6 is zlib's own default, within a percent of
   * 9. Below 1 KiB a response fits one packet whatever its coding, and the
   * coding's headers eat most of the saving. Threads 0: every walk thread
   * may compress (one per core, at most 4).
   */
  variantSettings: Object.freeze({
    encodings: Object.freeze(['br', 'gzip'] as const),
    brotliQuality: 5,
    gzipLevel: 6,
    minSize: 1024,
    minSavingPercent: 10,
    types: COMPRESSIBLE_EXTENSIONS,
    threads: 0,
  }) satisfies VariantSettings,
});
