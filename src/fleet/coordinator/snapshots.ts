import { randomUUID } from 'node:crypto';
import { mkdirSync, rmSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { MirrorswapError } from '../../core/errors.js';
import { SLOTS, type SeedSlot } from '../../store/store-layout.js';
import { ManifestFile, writeManifestAnswer } from '../../tree/manifest-file.js';

interface SlotSnapshot {
  /** Names the content the slot holds now; null while it is being rewritten or unknown. */
  id: string | null;
  manifest: ManifestFile | null;
  /** Host pulls reading the slot right now, each with how to cut it. */
  pulls: Set<() => void>;
  /** The slot's last manifest: the next walk reads only files rewritten since (same inode, time, size). */
  hashed: ManifestFile | null;
}

/** A manifest answer written to disk, sent as it is to every host that asks for it. */
export interface ManifestAnswer {
  file: string;
  bytes: number;
}

/** How long pulls of a slot about to be rewritten may run on before they are cut. */
const PULL_GRACE_MS = 1000;

/** Manifests of past snapshots kept to answer "what changed since": a host is at most a swap or two behind. */
const KEPT = 4;

/**
 * The coordinator's side of content transfer: which snapshot each of its
 * slots holds, their manifests, and the host pulls reading them. Manifests
 * and the answers made of them live in files under `dir` (sorted, merged
 * to compare: `ManifestFile`), so memory holds a bounded part of each
 * whatever the tree's size; `dir` is emptied at start (what an earlier
 * process left names snapshots no one will ask for). A slot is
 * a snapshot from the end of a copy into it until the next copy starts; the
 * copy lets pulls on it finish, for a moment, then cuts them (`release`); a pull that
 * names a snapshot no slot holds any more is refused (the host starts over
 * from the current one).
 */
export class Snapshots {
  readonly #roots: Readonly<Record<SeedSlot, string>>;
  readonly #dir: string;
  readonly #slots: Record<SeedSlot, SlotSnapshot> = {
    a: { id: null, manifest: null, pulls: new Set(), hashed: null },
    b: { id: null, manifest: null, pulls: new Set(), hashed: null },
  };
  readonly #past = new Map<string, ManifestFile>();
  /** Manifests an answer is being made from, and how many answers: not removed until they are done. */
  readonly #inUse = new Map<ManifestFile, number>();
  /** Answers made, by `<snapshot> <since>`, while both snapshots are known. */
  readonly #answers = new Map<string, Promise<ManifestAnswer>>();
  /** Bytes sent to hosts since start: manifest answers, and files answers (frames included). */
  readonly #sent = { manifests: 0, files: 0 };

  constructor(roots: Readonly<Record<SeedSlot, string>>, dir: string) {
    this.#roots = roots;
    this.#dir = dir;
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir, { recursive: true, mode: 0o700 });
  }

  /** The snapshot `slot` holds, or null. */
  idOf(slot: SeedSlot): string | null {
    return this.#slots[slot].id;
  }

  /** Name what `slot` holds now, after a copy into it: its manifest is read here, once. */
  async take(slot: SeedSlot): Promise<string> {
    const id = randomUUID();
    const manifest = await this.#read(slot, id);
    this.#slots[slot] = { ...this.#slots[slot], id, manifest };
    this.#remember(id, manifest);
    return id;
  }

  /**
   * Say that `slot` holds snapshot `id` (a coordinator restarted: its mounted
   * copy is the fleet's committed one, as its recorded position showed).
   */
  async adopt(slot: SeedSlot, id: string): Promise<void> {
    const manifest = await this.#read(slot, id);
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
   * Begin a pull of snapshot `id`: its slot and manifest, and `done` to call
   * when the pull's request ends (`cut` is called instead, if the slot is to
   * be rewritten first). Null when no slot holds `id`.
   */
  open(
    id: string,
    cut: () => void = () => {},
  ): { slot: SeedSlot; root: string; manifest: ManifestFile; done: () => void } | null {
    const slot = SLOTS.find((s) => this.#slots[s].id === id);
    const manifest = slot ? this.#slots[slot].manifest : null;
    if (!slot || !manifest) return null;
    const state = this.#slots[slot];
    // a pull's own entry: the same `cut` given twice still counts twice
    const entry = () => cut();
    state.pulls.add(entry);
    return {
      slot,
      root: this.#roots[slot],
      manifest,
      done: () => {
        state.pulls.delete(entry);
      },
    };
  }

  /**
   * The manifest answer for snapshot `id`: what changed since `since` when
   * that snapshot is still known, the whole manifest otherwise. Made once
   * (the first host to ask waits for it; the others share it), then kept
   * while both snapshots are.
   */
  answer(id: string, since: string | null): Promise<ManifestAnswer> {
    const manifest = this.#manifestOf(id);
    if (!manifest) return Promise.reject(new MirrorswapError('FLEET_MANIFEST', `snapshot ${id} is not known`));
    const base = since === null ? undefined : this.#manifestOf(since);
    const key = base ? `${id} ${since}` : `${id} `;
    let made = this.#answers.get(key);
    if (!made) {
      const file = join(this.#dir, `answer-${randomUUID()}.json`);
      // both manifests stay on disk until the merge is done, whatever is taken meanwhile
      const using = base ? [manifest, base] : [manifest];
      for (const m of using) this.#inUse.set(m, (this.#inUse.get(m) ?? 0) + 1);
      made = writeManifestAnswer(file, id, manifest, base ? { id: since as string, manifest: base } : null)
        .then((bytes) => ({ file, bytes }))
        .finally(() => {
          for (const m of using) {
            const left = (this.#inUse.get(m) ?? 1) - 1;
            if (left > 0) this.#inUse.set(m, left);
            else this.#inUse.delete(m);
            void this.#forget(m);
          }
        });
      this.#answers.set(key, made);
      made.catch(() => {
        if (this.#answers.get(key) === made) this.#answers.delete(key);
      });
    }
    return made;
  }

  /**
   * The manifest of snapshot `id`: a slot's, while it holds it (however many
   * snapshots were taken of the other slot since: syncs whose fleet commit
   * failed take the standby again and again), or a past one's.
   */
  #manifestOf(id: string): ManifestFile | undefined {
    const slot = SLOTS.find((s) => this.#slots[s].id === id);
    return (slot ? this.#slots[slot].manifest : null) ?? this.#past.get(id);
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

  /** The slot's manifest with every file's hash, reading only files written since its last walk. */
  async #read(slot: SeedSlot, id: string): Promise<ManifestFile> {
    const state = this.#slots[slot];
    const manifest = await ManifestFile.write(
      this.#roots[slot],
      join(this.#dir, `${id}-${randomUUID().slice(0, 8)}.manifest`),
      state.hashed,
    );
    const before = state.hashed;
    state.hashed = manifest;
    if (before) await this.#forget(before);
    return manifest;
  }

  #remember(id: string, manifest: ManifestFile): void {
    // a snapshot named again (adopted anew): its newest manifest, at the end of the order
    const before = this.#past.get(id);
    if (before) {
      this.#past.delete(id);
      this.#dropAnswers(id);
    }
    this.#past.set(id, manifest);
    if (before && before !== manifest) void this.#forget(before);
    while (this.#past.size > KEPT) {
      const [oldest, file] = this.#past.entries().next().value as [string, ManifestFile];
      this.#past.delete(oldest);
      void this.#forget(file);
      this.#dropAnswers(oldest);
    }
  }

  /** Forget the answers made from or to snapshot `id`, and remove their files. */
  #dropAnswers(id: string): void {
    for (const [key, answer] of this.#answers) {
      if (!key.split(' ').includes(id)) continue;
      this.#answers.delete(key);
      // an answer being sent reads on: its file goes with its last descriptor
      answer.then((a) => rm(a.file, { force: true })).catch(() => {});
    }
  }

  /**
   * Remove a manifest's file once nothing refers to it: not a known
   * snapshot, nor a slot's last walk, nor an answer being made from it.
   */
  async #forget(file: ManifestFile): Promise<void> {
    if ([...this.#past.values()].includes(file)) return;
    if (SLOTS.some((s) => this.#slots[s].hashed === file || this.#slots[s].manifest === file)) return;
    if (this.#inUse.has(file)) return;
    await file.remove().catch(() => {});
  }
}
