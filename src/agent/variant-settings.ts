import { VARIANT_ENCODINGS } from '../store/content-index.js';
import type { VariantSettings } from '../tree/compressible.js';
import { AGENT_DEFAULTS, VARIANT_RANGES } from './agent-defaults.js';
import type { ResolvedAgentOptions } from './agent-types.js';

type VariantOptions = Pick<
  ResolvedAgentOptions,
  | 'variants'
  | 'variantEncodings'
  | 'brotliQuality'
  | 'gzipLevel'
  | 'variantMinSize'
  | 'variantMinSaving'
  | 'variantTypes'
  | 'variantThreads'
  | 'precompress'
>;

/** The derive step's settings from the agent's options; null when variants are off (or no coding is wanted). */
export function variantSettings(opts: VariantOptions): VariantSettings | null {
  if (!opts.variants || opts.variantEncodings.length === 0) return null;
  return {
    encodings: opts.variantEncodings,
    brotliQuality: opts.brotliQuality,
    gzipLevel: opts.gzipLevel,
    minSize: opts.variantMinSize,
    minSavingPercent: opts.variantMinSaving,
    types: opts.variantTypes.map((t) => t.toLowerCase().replace(/^\./, '')),
    threads: opts.variantThreads,
  };
}

/**
 * One file extension, its dot optional: what `isCompressible` compares with
 * the part of a name after its last dot (no globs, paths or inner dots).
 */
export const VARIANT_TYPE = /^\.?[^./\s*?[\]{}\\]+$/;

/**
 * Bounds of `variantTypes`, far above any real list: each copy records the
 * selection its variants follow (`variant-selection.ts`) and reads it back
 * at every sync, within a bound of its own. A list past it could never be
 * read back, and every sync would derive the copy whole.
 */
export const MAX_VARIANT_TYPES = 256;
export const MAX_VARIANT_TYPE_LENGTH = 32;

/**
 * Refuse variant options that would do something else than they seem to
 * (the command line refuses the same as usage errors): a `precompress` or
 * `variants` that is not a boolean was read for its truth, an empty list of
 * codings turned the content index off with the variants, an empty list
 * of types compressed nothing, and numbers out of range reached zlib as
 * its own, less clear, errors at the first sync. A TypeError naming the
 * option.
 */
export function variantOptionsRefusal(opts: VariantOptions): void {
  const fail = (message: string): never => {
    throw new TypeError(message);
  };
  if (typeof opts.variants !== 'boolean') fail(`variants option must be true or false, not ${String(opts.variants)}`);
  if (typeof opts.precompress !== 'boolean')
    fail(`precompress option must be true or false, not ${String(opts.precompress)}`);
  const encodings: unknown = opts.variantEncodings;
  if (!Array.isArray(encodings)) fail(`variantEncodings option must be an array of ${VARIANT_ENCODINGS.join(', ')}`);
  for (const e of encodings as unknown[]) {
    if (!(VARIANT_ENCODINGS as readonly unknown[]).includes(e))
      fail(`variantEncodings option: unknown coding ${JSON.stringify(e)} (known: ${VARIANT_ENCODINGS.join(', ')})`);
  }
  const types: unknown = opts.variantTypes;
  if (!Array.isArray(types))
    fail('variantTypes option must be an array of file extensions, like ["html", "css", "js"]');
  if ((types as unknown[]).length > MAX_VARIANT_TYPES)
    fail(`variantTypes option lists ${(types as unknown[]).length} types: at most ${MAX_VARIANT_TYPES}`);
  for (const t of types as unknown[]) {
    if (typeof t !== 'string' || !VARIANT_TYPE.test(t))
      fail(
        `variantTypes option: ${JSON.stringify(t)} is not a file extension; list extensions, like ["html", "css", "js"] (no globs, paths or inner dots)`,
      );
    if ((t as string).length > MAX_VARIANT_TYPE_LENGTH)
      fail(`variantTypes option: ${JSON.stringify(t)} is longer than ${MAX_VARIANT_TYPE_LENGTH} characters`);
  }
  if (opts.variants) {
    if ((encodings as unknown[]).length === 0)
      fail(
        'variantEncodings option is empty: it would make no variant and no content index; to turn variants off, give variants: false',
      );
    if ((types as unknown[]).length === 0)
      fail('variantTypes option is empty: it would compress nothing; to turn variants off, give variants: false');
  }
  for (const [name, [min, max]] of Object.entries(VARIANT_RANGES) as [
    keyof typeof VARIANT_RANGES,
    [number, number],
  ][]) {
    const v = opts[name];
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max)
      fail(`${name} option must be an integer from ${min} to ${max}, not ${String(v)}`);
  }
}

/** The settings of an agent started with no variant option. */
export function defaultVariantSettings(): VariantSettings | null {
  return variantSettings(AGENT_DEFAULTS);
}
