/** Run at most `concurrency` async tasks at a time (file copies, stats). */
export class Limiter {
  readonly #max: number;
  #active = 0;
  readonly #queue: (() => void)[] = [];

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
      this.#queue.shift()?.();
    }
  }
}
