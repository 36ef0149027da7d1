/**
 * Where cached file bodies live: a few large segments (1 MiB, or the largest
 * cacheable file), allocated as the cache fills and then reused in turn,
 * oldest first. Memory for bodies is then exactly the segments allocated,
 * whatever the number or size of the files, with nothing left for the
 * garbage collector to find late and no small allocations for malloc to
 * scatter: a 2 KB body read into a buffer of its own costs its backing store,
 * its allocator's rounding and the heap it fragments, and an evicted one
 * stays resident until a full collection happens to run.
 *
 * A segment is reused only when nothing reads from it: a response sending a
 * body holds its segment until the response closes (the socket may still be
 * writing from it), and a read into a reserved range holds it until the read
 * ends. Reusing one evicts every cache entry whose body it held, and a body
 * taken after that (by a request that found its entry just before) is
 * refused by its generation, so the request streams the file from disk
 * instead: a body is never sent from bytes that were overwritten.
 */

/** A segment's size, unless a larger body or a small budget says otherwise: its own overhead is nothing, and it is reused often. */
const SEGMENT_BYTES = 1024 * 1024;

/** An entry of a cache whose body a segment holds, told when that segment is reused. */
export interface BodyHolder {
  evictBody(key: string, body: ArenaBody): void;
}

class Segment {
  readonly buf: Buffer;
  used = 0;
  generation = 0;
  /** Responses still sending from it, and reads still filling it. */
  pins = 0;
  /** Let go of one pin: made once per segment, so a response holding it costs no closure. */
  readonly unpin = (): void => {
    this.pins--;
  };
  holders: { holder: BodyHolder; key: string; body: ArenaBody }[] = [];

  constructor(bytes: number) {
    // one allocation of its own, outside Node's pool: freed as a whole, never pinned by a slice of another
    this.buf = Buffer.allocUnsafeSlow(bytes);
  }
}

/** A body in the arena: valid while its segment is at the same generation. */
export interface ArenaBody {
  readonly segment: Segment;
  readonly generation: number;
  readonly start: number;
  readonly length: number;
}

export class BodyArena {
  readonly #segmentBytes: number;
  /** How many bytes of segments the arena may hold now (the budget less what the cache's entries cost). */
  readonly #room: () => number;
  readonly #segments: Segment[] = [];
  #current: Segment | null = null;
  /** Index of the segment to reuse next: the ring's oldest. */
  #oldest = 0;

  /**
   * `maxBodyBytes`: the largest body to hold (a segment is at least that);
   * `maxSegmentBytes`: a cap for small budgets, so that one still holds a
   * segment (bodies larger than it are then streamed); `room`: see above.
   */
  constructor(opts: { maxBodyBytes: number; maxSegmentBytes?: number; room: () => number }) {
    const wanted = Math.max(SEGMENT_BYTES, opts.maxBodyBytes);
    this.#segmentBytes = Math.floor(Math.min(wanted, opts.maxSegmentBytes ?? wanted));
    this.#room = opts.room;
  }

  /** Bytes of segments that cannot be reused now: a response still sends from them, or a read fills them. */
  get pinnedBytes(): number {
    let n = 0;
    for (const segment of this.#segments) if (segment.pins > 0) n += this.#segmentBytes;
    return n;
  }

  /** Bytes of segments allocated: what the bodies really cost. */
  get bytes(): number {
    return this.#segments.length * this.#segmentBytes;
  }

  /**
   * Room for a body of `length` bytes, held (not reusable) until `done()`;
   * null when none can be had now (the budget is spent and every segment is
   * in use): the body is then not cached.
   */
  reserve(length: number): { body: ArenaBody; bytes: Buffer; done: () => void } | null {
    if (length > this.#segmentBytes || this.#segmentBytes === 0) return null;
    let segment = this.#current;
    if (segment === null || segment.used + length > this.#segmentBytes) {
      segment = this.#nextSegment();
      if (segment === null) return null;
      this.#current = segment;
    }
    const start = segment.used;
    segment.used += length;
    segment.pins++;
    return {
      body: { segment, generation: segment.generation, start, length },
      bytes: segment.buf.subarray(start, start + length),
      done: segment.unpin,
    };
  }

  /** Record that `holder` keeps `body` under `key`: it is told when the body's segment is reused. */
  hold(holder: BodyHolder, key: string, body: ArenaBody): void {
    if (body.segment.generation === body.generation) body.segment.holders.push({ holder, key, body });
  }

  /**
   * The bytes of `body`, or null if its segment was reused since. Taken
   * bytes are held until the holder's response closes.
   */
  take(body: ArenaBody, holder: { untilClose(fn: () => void): void }): Buffer | null {
    const { segment } = body;
    if (segment.generation !== body.generation) return null;
    segment.pins++;
    holder.untilClose(segment.unpin);
    return segment.buf.subarray(body.start, body.start + body.length);
  }

  /** Forget every holder (a cache dropped with its epoch): their bodies' room is reused when its turn comes. */
  release(holder: BodyHolder): void {
    for (const segment of this.#segments) segment.holders = segment.holders.filter((h) => h.holder !== holder);
  }

  #nextSegment(): Segment | null {
    if (this.bytes + this.#segmentBytes <= this.#room()) {
      const fresh = new Segment(this.#segmentBytes);
      // a new segment joins the ring just before the oldest, so it is reused last
      this.#segments.splice(this.#oldest, 0, fresh);
      this.#oldest = (this.#oldest + 1) % this.#segments.length;
      return fresh;
    }
    for (let tried = 0; tried < this.#segments.length; tried++) {
      const index = (this.#oldest + tried) % this.#segments.length;
      const segment = this.#segments[index] as Segment;
      if (segment.pins > 0) continue;
      this.#oldest = (index + 1) % this.#segments.length;
      this.#reuse(segment);
      return segment;
    }
    return null;
  }

  #reuse(segment: Segment): void {
    segment.generation++;
    segment.used = 0;
    const holders = segment.holders;
    segment.holders = [];
    for (const { holder, key, body } of holders) holder.evictBody(key, body);
  }
}
