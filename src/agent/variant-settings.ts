import type { VariantSettings } from '../tree/compressible.js';
import { AGENT_DEFAULTS } from './agent-defaults.js';
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

/** The settings of an agent started with no variant option. */
export function defaultVariantSettings(): VariantSettings | null {
  return variantSettings(AGENT_DEFAULTS);
}
