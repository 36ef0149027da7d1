/**
 * What a copy may still keep of the files it replaces
 * (`CopyOptions.keepReplacedBytes`), in bytes: one counter in shared memory,
 * drawn on by the copier and by the walk threads that place files
 * (stage-files.ts) alike, so the budget holds however many place side by
 * side. What is kept is the file replaced: its bytes are drawn.
 */
export type KeepBudget = BigInt64Array;

/** A budget of `bytes` (Infinity, or a fraction, taken as the whole number of bytes a counter holds). */
export function keepBudget(bytes: number): KeepBudget {
  const budget = new BigInt64Array(new SharedArrayBuffer(8));
  refillKeepBudget(budget, bytes);
  return budget;
}

/** Set the budget back to `bytes` (what was kept has been freed). */
export function refillKeepBudget(budget: KeepBudget, bytes: number): void {
  budget[0] = BigInt(Math.floor(Math.min(Math.max(0, bytes), Number.MAX_SAFE_INTEGER)));
}

/** Draw `bytes` from the budget: false (nothing drawn) when they do not fit. */
export function drawKeep(budget: KeepBudget, bytes: number): boolean {
  const drawn = BigInt(bytes);
  if (Atomics.sub(budget, 0, drawn) >= drawn) return true;
  Atomics.add(budget, 0, drawn);
  return false;
}

/** Give back what `drawKeep` drew, for a file that was not kept after all. */
export function returnKeep(budget: KeepBudget, bytes: number): void {
  Atomics.add(budget, 0, BigInt(bytes));
}
