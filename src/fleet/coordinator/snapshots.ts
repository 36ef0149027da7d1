import { randomUUID } from 'node:crypto';
import { setTimeout as delay } from 'node:timers/promises';
import { MirrorswapError } from '../../core/errors.js';
import { SLOTS, type SeedSlot } from '../../store/store-layout.js';
import {
  type HashedFile,
  type Manifest,
  type ManifestDelta,
  diffManifests,
  readManifest,
} from '../../tree/manifest.js';

type Hashed = Map<string, HashedFile>;

interface SlotSnapshot {
  /** Names the content the slot holds now; null while it is being rewritten or unknown. */
  id: string | null;
  manifest: Manifest | null;
  /** Host pulls reading the slot right now, each with how to cut it. */
  pulls: Set<() => void>;
  /** Each file's hash as last read in this slot: the next walk reads only files rewritten since. */
  hashed: Hashed;
}

/** How long pulls of a slot about to be rewritten may run on before they are cut. */
const PULL_GRACE_MS = 1000;

/** Manifests of past snapshots kept to answer "what changed since": a host is at most a swap or two behind. */
const KEPT = 4;

/**
 * The coordinator's side of content transfer: which snapshot each of its
 * slots holds, their manifests, and the host pulls reading them. A slot is
 * a snapshot from the end of a copy into it until the next copy starts; the
 * copy lets pulls on it finish, for a moment, then cuts them (`release`); a pull that
 * names a snapshot no slot holds any more is refused (the host starts over
 * from the current one).
 */
export class Snapshots {
  readonly #roots: Readonly<Record<SeedSlot, string>>;
  readonly #slots: Record<SeedSlot, SlotSnapshot> = {
    a: { id: null, manifest: null, pulls: new Set(), hashed: new Map() },
    b: { id: null, manifest: null, pulls: new Set(), hashed: new Map() },
  };
  readonly #past = new Map<string, Manifest>();
  /** Bytes sent to hosts since start: manifest answers, and files answers (frames included). */
  readonly #sent = { manifests: 0, files: 0 };

  constructor(roots: Readonly<Record<SeedSlot, string>>) {
    this.#roots = roots;
  }

  /** The snapshot `slot` holds, or null. */
  idOf(slot: SeedSlot): string | null {
    return this.#slots[slot].id;
  }

  /** Name what `slot` holds now, after a copy into it: its manifest is read here, once. */
  async take(slot: SeedSlot): Promise<string> {
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
  async adopt(slot: SeedSlot, id: string): Promise<void> {
    const manifest = await this.#read(slot);
    this.#slots[slot] = { ...this.#slots[slot], id, manifest };
    this.#remember(id, manifest);
  }

  /**
   * Before a copy into `slot`: no new pull may start on it; the ones under
   * way get `graceMs` to finish, then are cut. A pull of the standby is
   * always stale (a host that needs the committed copy reads the mounted
   * slot), so a host that stopped mid-pull (SIGSTOP, a hung network) must
   * not hold the next swap up: it gets a cut answer and starts over from the
   * current snapshot. Fails only if a cut pull still has not ended by
   * `timeoutMs`.
   */
  async release(slot: SeedSlot, timeoutMs: number, graceMs = PULL_GRACE_MS): Promise<void> {
    const state = this.#slots[slot];
    state.id = null;
    state.manifest = null;
    const started = Date.now();
    let cut = false;
    while (state.pulls.size > 0) {
      const waited = Date.now() - started;
      if (!cut && waited >= Math.min(graceMs, timeoutMs)) {
        for (const cutPull of [...state.pulls]) cutPull();
        cut = true;
      }
      if (waited >= timeoutMs) {
        throw new MirrorswapError(
          'DRAIN_TIMEOUT',
          `gave up after ${Math.round(timeoutMs / 1000)} s waiting for ${state.pulls.size} fleet host pulls to end on slot ${slot}`,
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
    cut: () => void = () => {},
  ): { slot: SeedSlot; root: string; manifest: Manifest; delta: ManifestDelta | null; done: () => void } | null {
    const slot = SLOTS.find((s) => this.#slots[s].id === id);
    const manifest = slot ? this.#slots[slot].manifest : null;
    if (!slot || !manifest) return null;
    const base = since ? this.#past.get(since) : undefined;
    const state = this.#slots[slot];
    // a pull's own entry: the same `cut` given twice still counts twice
    const entry = () => cut();
    state.pulls.add(entry);
    return {
      slot,
      root: this.#roots[slot],
      manifest,
      delta: base ? diffManifests(base, manifest) : null,
      done: () => {
        state.pulls.delete(entry);
      },
    };
  }

  /** Count bytes of a manifest answer sent. */
  sentManifest(bytes: number): void {
    this.#sent.manifests += bytes;
  }

  /** Count bytes of a files answer sent. */
  sentFiles(bytes: number): void {
    this.#sent.files += bytes;
  }

  /** Bytes sent to hosts since start (what peers save shows here). */
  sent(): { manifests: number; files: number } {
    return { ...this.#sent };
  }

  /** Pulls under way on each slot, for status. */
  pulls(): Record<SeedSlot, number> {
    return { a: this.#slots.a.pulls.size, b: this.#slots.b.pulls.size };
  }

  /** The slot's manifest with every file's hash, reading only files written since the last walk. */
  async #read(slot: SeedSlot): Promise<Manifest> {
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
