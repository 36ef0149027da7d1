/** Run at most `concurrency` async tasks at a time (file copies, stats). */
export class Limiter {
  readonly #max: number;
  #active = 0;
  // a queue with a moving head: Array#shift is linear on large arrays
  #queue: (() => void)[] = [];
  #head = 0;

  constructor(concurrency: number) {
    this.#max = concurrency;
  }

  async run<T>(task: () => Promise<T>): Promise<T> {
    if (this.#active >= this.#max) await new Promise<void>((resolve) => this.#queue.push(resolve));
    this.#active++;
    try {
      return await task();
    } finally {
      this.#active--;
      this.#next();
    }
  }

  #next(): void {
    if (this.#head >= this.#queue.length) return;
    const wake = this.#queue[this.#head++];
    if (this.#head > 1024 && this.#head * 2 > this.#queue.length) {
      this.#queue = this.#queue.slice(this.#head);
      this.#head = 0;
    }
    wake?.();
  }
}

/** Call `fn` on every item, `concurrency` at a time, in order of start; rejects on the first failure. */
export async function forEachLimited<T>(
  items: readonly T[],
  concurrency: number,
  fn: (item: T) => Promise<void>,
): Promise<void> {
  let index = 0;
  const worker = async () => {
    while (index < items.length) await fn(items[index++] as T);
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, worker));
}
