/**
 * The tree engine's defaults. The agent's and the host agent's tables take
 * theirs from here, so a copy made without an explicit setting behaves as the
 * agent's default says.
 */
export const TREE_DEFAULTS = Object.freeze({
  /** fsync copied files and changed directories before a copy returns. */
  durable: true,
});
