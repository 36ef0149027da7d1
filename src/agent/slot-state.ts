import { writeFileAtomic } from '../atomic-write.js';
import { readSmallFile } from '../read-small-file.js';
import type { SlotName } from '../store-layout.js';

/** What the agent knows of one slot's content. */
export interface SlotPosition {
  /** Journal sequence the slot mirrors master at; null when unknown (a full compare is needed). */
  readonly seq: number | null;
  /** A copy into the slot started and has not finished: its content is mixed. */
  readonly syncing: boolean;
}

export interface SlotStateFile {
  readonly format: 1;
  /** Journal the positions refer to; positions against another journal are void. */
  readonly journal: string;
  readonly slots: Readonly<Record<SlotName, SlotPosition>>;
}

/** The positions file is a few hundred bytes. */
const MAX_STATE_BYTES = 64 * 1024;

const UNKNOWN: SlotPosition = { seq: null, syncing: false };

/** Per-slot sync positions, crash-safe (atomic, durable writes). */
export class SlotState {
  readonly #file: string;
  #state: SlotStateFile;

  private constructor(file: string, state: SlotStateFile) {
    this.#file = file;
    this.#state = state;
  }

  /** Load positions; any that refer to another journal (or none) are treated as unknown. */
  static async load(file: string, journalId: string): Promise<SlotState> {
    let state: SlotStateFile | null = null;
    try {
      const parsed = JSON.parse(
        (await readSmallFile(file, MAX_STATE_BYTES))?.toString('utf8') ?? 'null',
      ) as SlotStateFile;
      if (parsed.format === 1 && parsed.journal === journalId && parsed.slots?.a && parsed.slots?.b) state = parsed;
    } catch {
      state = null;
    }
    return new SlotState(file, state ?? { format: 1, journal: journalId, slots: { a: UNKNOWN, b: UNKNOWN } });
  }

  /**
   * The slot's position as the file on disk records it now (null when the
   * file is unreadable or refers to another journal): what a publish checks.
   */
  async recorded(slot: SlotName): Promise<SlotPosition | null> {
    try {
      const parsed = JSON.parse(
        (await readSmallFile(this.#file, MAX_STATE_BYTES))?.toString('utf8') ?? 'null',
      ) as SlotStateFile;
      return parsed.format === 1 && parsed.journal === this.#state.journal ? (parsed.slots?.[slot] ?? null) : null;
    } catch {
      return null;
    }
  }

  get(slot: SlotName): SlotPosition {
    return this.#state.slots[slot];
  }

  async set(slot: SlotName, position: SlotPosition): Promise<void> {
    const next: SlotStateFile = { ...this.#state, slots: { ...this.#state.slots, [slot]: position } };
    await writeFileAtomic(this.#file, `${JSON.stringify(next, null, 2)}\n`, { durable: true });
    this.#state = next;
  }
}
