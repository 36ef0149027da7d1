/**
 * An async mutual exclusion lock. Master writes and the copy phase of a sync
 * both take it, which is what keeps a batch of writes from being split across
 * epochs: a copy sees master before a batch or after it, never in between.
 */
export class Mutex {
  #tail: Promise<void> = Promise.resolve();

  async lock<T>(task: () => Promise<T>): Promise<T> {
    const previous = this.#tail;
    let release!: () => void;
    this.#tail = new Promise<void>((resolve) => {
      release = resolve;
    });
    await previous;
    try {
      return await task();
    } finally {
      release();
    }
  }
}
