import { readSmallFile } from './read-small-file.js';
import { writeSectorFile } from './sector-file.js';
import { ALL_SLOTS, type SlotMap, type SlotName } from './store-layout.js';

/** What the agent knows of one slot's content. */
export interface SlotPosition {
  /** Journal sequence the slot mirrors master at; null when unknown (a full compare is needed). */
  readonly seq: number | null;
  /** A copy into the slot started and has not finished: its content is mixed. */
  readonly copying: boolean;
}

/**
 * The positions file (`state/slots.json`) as stored. Its field for an
 * unfinished copy is named `syncing`, as it has been since format 1.
 */
interface PositionsFile {
  readonly format: 1;
  /** Journal the positions refer to; positions against another journal are void. */
  readonly journal: string;
  readonly slots: Readonly<SlotMap<{ readonly seq: number | null; readonly syncing: boolean }>>;
}

/** The positions file is a few hundred bytes. */
const MAX_FILE_BYTES = 64 * 1024;

const UNKNOWN: SlotPosition = { seq: null, copying: false };

/** The file at `file` if it is readable and refers to `journalId` (any journal for null), else null. */
async function readPositions(file: string, journalId: string | null): Promise<PositionsFile | null> {
  try {
    const parsed = JSON.parse(
      (await readSmallFile(file, MAX_FILE_BYTES))?.toString('utf8') ?? 'null',
    ) as PositionsFile | null;
    const ours = journalId === null || parsed?.journal === journalId;
    return parsed?.format === 1 && ours && parsed.slots?.a && parsed.slots?.b ? parsed : null;
  } catch {
    return null;
  }
}

function fromFile(stored: PositionsFile['slots'][SlotName]): SlotPosition {
  return stored ? { seq: stored.seq, copying: stored.syncing } : UNKNOWN;
}

/** Every slot's position the file records (a slot it does not name is unknown). */
function allFromFile(stored: PositionsFile): Record<SlotName, SlotPosition> {
  return Object.fromEntries(ALL_SLOTS.map((s) => [s, fromFile(stored.slots[s])])) as Record<SlotName, SlotPosition>;
}

const ALL_UNKNOWN = Object.fromEntries(ALL_SLOTS.map((s) => [s, UNKNOWN])) as Record<SlotName, SlotPosition>;

/**
 * Each slot's journal position, crash-safe: every change is durable before
 * `set` returns, and a crash leaves the positions before it or after it
 * (one sector rewritten in place: `writeSectorFile`).
 */
export class SlotPositions {
  readonly #file: string;
  readonly #journalId: string;
  #positions: Record<SlotName, SlotPosition>;

  private constructor(file: string, journalId: string, positions: Record<SlotName, SlotPosition>) {
    this.#file = file;
    this.#journalId = journalId;
    this.#positions = positions;
  }

  /** Load positions; any that refer to another journal (or none) are treated as unknown. */
  static async load(file: string, journalId: string): Promise<SlotPositions> {
    const stored = await readPositions(file, journalId);
    return new SlotPositions(file, journalId, stored ? allFromFile(stored) : { ...ALL_UNKNOWN });
  }

  /**
   * The positions as last written, whatever journal they refer to (null when
   * there are none): what a store that lost its epoch file recovers from.
   */
  static async lastWritten(file: string): Promise<Record<SlotName, SlotPosition> | null> {
    const stored = await readPositions(file, null);
    return stored ? allFromFile(stored) : null;
  }

  /**
   * The slot's position as the file on disk records it now (null when the
   * file is unreadable or refers to another journal): what a publish checks.
   */
  async recorded(slot: SlotName): Promise<SlotPosition | null> {
    const stored = await readPositions(this.#file, this.#journalId);
    return stored ? fromFile(stored.slots[slot]) : null;
  }

  get(slot: SlotName): SlotPosition {
    return this.#positions[slot];
  }

  async set(slot: SlotName, position: SlotPosition): Promise<void> {
    const next = { ...this.#positions, [slot]: position };
    const file: PositionsFile = {
      format: 1,
      journal: this.#journalId,
      // the seed's two always; another slot once it was ever written (its position known or mid-copy)
      slots: Object.fromEntries(
        ALL_SLOTS.filter((s) => s === 'a' || s === 'b' || next[s].seq !== null || next[s].copying).map((s) => [
          s,
          { seq: next[s].seq, syncing: next[s].copying },
        ]),
      ) as PositionsFile['slots'],
    };
    // compact, so it fits the one sector that is rewritten in place
    await writeSectorFile(this.#file, JSON.stringify(file));
    this.#positions = next;
  }
}
