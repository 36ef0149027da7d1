/** Whether `value` is a safe integer of at least `min`: epochs, leases, counts and option values. */
export function isIntegerAtLeast(value: unknown, min: number): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= min;
}
