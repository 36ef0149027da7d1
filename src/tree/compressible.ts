import { extname } from 'node:path';
import { type BrotliOptions, type ZlibOptions, constants as zlibConstants } from 'node:zlib';
import { VARIANT_ENCODINGS, VARIANT_SUFFIX, type VariantEncoding } from '../store/content-index.js';

/**
 * Extensions of the files worth precompressing: text and the formats built
 * of it (markup, scripts, styles, data, source maps, SVG), WebAssembly, and
 * the font formats that are not compressed inside (TrueType, OpenType,
 * Embedded OpenType, icons). Not the formats that are compressed already
 * (images other than SVG and BMP, WOFF and WOFF2, archives, audio, video):
 * brotli saves them nothing and costs a read and a compression each.
 */
export const COMPRESSIBLE_EXTENSIONS: readonly string[] = Object.freeze([
  'html',
  'htm',
  'xhtml',
  'css',
  'js',
  'mjs',
  'cjs',
  'jsx',
  'ts',
  'json',
  'jsonld',
  'webmanifest',
  'map',
  'xml',
  'rss',
  'atom',
  'svg',
  'txt',
  'text',
  'md',
  'csv',
  'tsv',
  'ics',
  'vtt',
  'wasm',
  'ttf',
  'otf',
  'eot',
  'ico',
  'bmp',
  'glsl',
  'yaml',
  'yml',
  'toml',
]);

/** How the agent makes variants: the settings of the derive step (defaults in `TREE_DEFAULTS.variants`). */
export interface VariantSettings {
  /** Codings to make, in `VARIANT_ENCODINGS`' order. */
  readonly encodings: readonly VariantEncoding[];
  /** Brotli quality, 0 to 11. */
  readonly brotliQuality: number;
  /** gzip level, 1 to 9. */
  readonly gzipLevel: number;
  /** Files smaller than this many bytes get no variant. */
  readonly minSize: number;
  /** A variant is kept only when it is at least this many percent smaller than its original. */
  readonly minSavingPercent: number;
  /** Extensions (lower case, no dot) of the files to compress. */
  readonly types: readonly string[];
  /**
   * The walk threads a derive may use at once (0: all of them): the cores a
   * full copy's compression may take from the web servers on the same host.
   */
  readonly threads: number;
}

/**
 * Files above this size get no variant, and a sibling of theirs is not
 * checked as one: the derive never holds such a file whole in memory (it
 * hashes it as a stream), and one compression of it would hold a walk thread
 * for seconds. Web bundles are far below it.
 */
export const VARIANT_MAX_BYTES = 64 * 1024 * 1024;

/** True when a file named `name` of `size` bytes is one to make variants of under `settings`. */
export function isCompressible(name: string, size: number, settings: VariantSettings): boolean {
  if (size < settings.minSize || size === 0 || size > VARIANT_MAX_BYTES) return false;
  const ext = extname(name).slice(1).toLowerCase();
  return ext !== '' && settings.types.includes(ext);
}

/** The original a variant name stands for, with its coding (`app.js.br` → `app.js`, br); null for other names. */
export function variantOf(name: string): { base: string; encoding: VariantEncoding } | null {
  for (const encoding of VARIANT_ENCODINGS) {
    const suffix = VARIANT_SUFFIX[encoding];
    if (name.length > suffix.length && name.endsWith(suffix)) return { base: name.slice(0, -suffix.length), encoding };
  }
  return null;
}

/** Codings from a comma-separated list (`br,gzip`); throws on an unknown one. */
export function parseEncodings(list: string): VariantEncoding[] {
  const wanted = list
    .split(',')
    .map((s) => s.trim().toLowerCase())
    .filter((s) => s !== '');
  for (const w of wanted) {
    if (!(VARIANT_ENCODINGS as readonly string[]).includes(w))
      throw new Error(`unknown variant encoding "${w}" (known: ${VARIANT_ENCODINGS.join(', ')})`);
  }
  return VARIANT_ENCODINGS.filter((e) => wanted.includes(e));
}

/**
 * The smallest brotli window that holds the whole input (brotli's default,
 * 4 MiB, beyond it). A window larger than the input finds nothing more, yet
 * each call allocates and touches it: for a 20 KB file the default window
 * made a compression cost 0.6 to 3 ms instead of 0.3.
 */
function brotliWindowFor(size: number): number {
  const { BROTLI_MIN_WINDOW_BITS: min, BROTLI_DEFAULT_WINDOW: max } = zlibConstants;
  // a window of 2^w bytes holds 2^w - 16 of input
  return Math.min(max, Math.max(min, Math.ceil(Math.log2(size + 16))));
}

/**
 * How a variant of `size` bytes of input is compressed under `settings`:
 * the one place that says it, for the derive (at sync) and the cache (as
 * files land in master) alike, so both make the same bytes.
 */
export function compressionOptions(
  encoding: VariantEncoding,
  size: number,
  settings: VariantSettings,
): BrotliOptions & ZlibOptions {
  if (encoding === 'gzip') return { level: settings.gzipLevel };
  return {
    params: {
      [zlibConstants.BROTLI_PARAM_QUALITY]: settings.brotliQuality,
      [zlibConstants.BROTLI_PARAM_SIZE_HINT]: size,
      [zlibConstants.BROTLI_PARAM_MODE]: zlibConstants.BROTLI_MODE_TEXT,
      [zlibConstants.BROTLI_PARAM_LGWIN]: brotliWindowFor(size),
    },
  };
}
