/**
 * A seeded random source for tests: the seed comes from MIRRORSWAP_TEST_SEED
 * when set (to replay a failure), else from the clock, and every failure
 * message should carry it (`describe()`).
 */
export interface Seeded {
  readonly seed: number;
  /** A float in [0, 1). */
  next(): number;
  /** An integer in [0, n). */
  int(n: number): number;
  pick<T>(items: readonly T[]): T;
  /** "seed N (replay with MIRRORSWAP_TEST_SEED=N)". */
  describe(): string;
}

export function seeded(seed = Number(process.env.MIRRORSWAP_TEST_SEED ?? Date.now() % 2 ** 31)): Seeded {
  let state = seed >>> 0;
  // mulberry32: small, fast, and good enough to choose test steps
  const next = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    seed,
    next,
    int: (n) => Math.floor(next() * n),
    pick: (items) => items[Math.floor(next() * items.length)] as (typeof items)[number],
    describe: () => `seed ${seed} (replay with MIRRORSWAP_TEST_SEED=${seed})`,
  };
}
