import type { SlotName } from '../../store/store-layout.js';

/** What a whole walk of master is for. */
export type WalkPurpose = 'sync' | 'verify' | 'compare';

/** A whole walk of master under way: how far it has got, for status and progress lines. */
export interface WalkProgress {
  /** A full sync (compare and copy), a `verify`, or a comparison that keeps the journal whole. */
  purpose: WalkPurpose;
  /** The copy master is walked against. */
  slot: SlotName;
  /** Entries of master looked at so far: compared, or copied whole. */
  entries: number;
  /**
   * Master's entries as its last whole walk found them (or the watcher's
   * listing at start): what this walk should come to, so a progress line
   * can show a share and an ETA. Null until master was walked once.
   */
  expected: number | null;
  startedAt: string;
}

/**
 * The whole walks of master under way (a verify may run beside a sync), and
 * master's size in entries as the last one found it. Knowing the size costs
 * nothing extra: each walk counts what it lists anyway. Counting master
 * before each walk would give an exact total, at the price of a second walk
 * (seconds at a million files) on every full sync.
 */
export class MasterWalks {
  readonly #walks = new Set<WalkProgress>();
  /** Entries in master at its last whole walk; null before any. */
  entries: number | null = null;

  /**
   * Run `walk`, counting the entries it reports through its argument. When
   * `whole` says it walked all of master (not cut short by a limit), its
   * count becomes master's known size.
   */
  async track<T>(
    purpose: WalkPurpose,
    slot: SlotName,
    walk: (onWalked: (entries: number) => void) => Promise<T>,
    whole: (result: T) => boolean = () => true,
  ): Promise<T> {
    const progress: WalkProgress = {
      purpose,
      slot,
      entries: 0,
      expected: this.entries,
      startedAt: new Date().toISOString(),
    };
    this.#walks.add(progress);
    try {
      const result = await walk((entries) => {
        progress.entries += entries;
      });
      if (whole(result)) this.entries = progress.entries;
      return result;
    } finally {
      this.#walks.delete(progress);
    }
  }

  /** The walks under way, copied (for status). */
  list(): WalkProgress[] {
    return [...this.#walks].map((w) => ({ ...w }));
  }
}
