import { randomUUID } from 'node:crypto';
import { setTimeout as delay } from 'node:timers/promises';
import { MirrorswapError } from '../errors.js';
import { SLOTS, type SlotName } from '../store-layout.js';
import { type Manifest, type ManifestDelta, diffManifests, readManifest } from './manifest.js';

type Hashed = Map<string, { ino: number; ctimeMs: number; size: number; hash: string }>;

interface SlotSnapshot {
  /** Names the content the slot holds now; null while it is being rewritten or unknown. */
  id: string | null;
  manifest: Manifest | null;
  /** Host pulls reading the slot right now. */
  pulls: number;
  /** Each file's hash as last read in this slot: the next walk reads only files rewritten since. */
  hashed: Hashed;
}

/** Manifests of past snapshots kept to answer "what changed since": a host is at most a swap or two behind. */
const KEPT = 4;

/**
 * The coordinator's side of content transfer: which snapshot each of its
 * slots holds, their manifests, and the host pulls reading them. A slot is
 * a snapshot from the end of a copy into it until the next copy starts; the
 * copy waits for pulls on it to finish first (`release`), and a pull that
 * names a snapshot no slot holds any more is refused (the host starts over
 * from the current one).
 */
export class Snapshots {
  readonly #roots: Readonly<Record<SlotName, string>>;
  readonly #slots: Record<SlotName, SlotSnapshot> = {
    a: { id: null, manifest: null, pulls: 0, hashed: new Map() },
    b: { id: null, manifest: null, pulls: 0, hashed: new Map() },
  };
  readonly #past = new Map<string, Manifest>();

  constructor(roots: Readonly<Record<SlotName, string>>) {
    this.#roots = roots;
  }

  /** The snapshot `slot` holds, or null. */
  idOf(slot: SlotName): string | null {
    return this.#slots[slot].id;
  }

  /** Name what `slot` holds now, after a copy into it: its manifest is read here, once. */
  async take(slot: SlotName): Promise<string> {
    const manifest = await this.#read(slot);
    const id = randomUUID();
    this.#slots[slot] = { ...this.#slots[slot], id, manifest };
    this.#remember(id, manifest);
    return id;
  }

  /**
   * Say that `slot` holds snapshot `id` (a coordinator restarted: its mounted
   * copy is the fleet's committed one, as its recorded position showed).
   */
  async adopt(slot: SlotName, id: string): Promise<void> {
    const manifest = await this.#read(slot);
    this.#slots[slot] = { ...this.#slots[slot], id, manifest };
    this.#remember(id, manifest);
  }

  /**
   * Before a copy into `slot`: no new pull may start on it, and the ones
   * under way finish first (or the wait fails after `timeoutMs`).
   */
  async release(slot: SlotName, timeoutMs: number): Promise<void> {
    this.#slots[slot].id = null;
    this.#slots[slot].manifest = null;
    const deadline = Date.now() + timeoutMs;
    while (this.#slots[slot].pulls > 0) {
      if (Date.now() >= deadline) {
        throw new MirrorswapError(
          'DRAIN_TIMEOUT',
          `gave up after ${Math.round(timeoutMs / 1000)} s waiting for ${this.#slots[slot].pulls} fleet host pulls to finish reading slot ${slot}`,
        );
      }
      await delay(20);
    }
  }

  /**
   * Begin a pull of snapshot `id`: its slot, its manifest or the delta from
   * `since` (when that snapshot's manifest is still known), and `done` to
   * call when the pull's request ends. Null when no slot holds `id`.
   */
  open(
    id: string,
    since: string | null,
  ): { slot: SlotName; root: string; manifest: Manifest; delta: ManifestDelta | null; done: () => void } | null {
    const slot = SLOTS.find((s) => this.#slots[s].id === id);
    const manifest = slot ? this.#slots[slot].manifest : null;
    if (!slot || !manifest) return null;
    const base = since ? this.#past.get(since) : undefined;
    const state = this.#slots[slot];
    state.pulls++;
    let done = false;
    return {
      slot,
      root: this.#roots[slot],
      manifest,
      delta: base ? diffManifests(base, manifest) : null,
      done: () => {
        if (!done) state.pulls--;
        done = true;
      },
    };
  }

  /** Pulls under way on each slot, for status. */
  pulls(): Record<SlotName, number> {
    return { a: this.#slots.a.pulls, b: this.#slots.b.pulls };
  }

  /** The slot's manifest with every file's hash, reading only files written since the last walk. */
  async #read(slot: SlotName): Promise<Manifest> {
    const seen: Hashed = new Map();
    const manifest = await readManifest(this.#roots[slot], { cache: this.#slots[slot].hashed, seen });
    this.#slots[slot].hashed = seen;
    return manifest;
  }

  #remember(id: string, manifest: Manifest): void {
    this.#past.set(id, manifest);
    while (this.#past.size > KEPT) {
      const oldest = this.#past.keys().next().value as string;
      this.#past.delete(oldest);
    }
  }
}
