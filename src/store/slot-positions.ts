import { readSmallFile } from './read-small-file.js';
import { writeSectorFile } from './sector-file.js';
import type { SlotName } from './store-layout.js';

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
  readonly slots: Readonly<Record<SlotName, { readonly seq: number | null; readonly syncing: boolean }>>;
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
  return { seq: stored.seq, copying: stored.syncing };
}

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
    return new SlotPositions(
      file,
      journalId,
      stored ? { a: fromFile(stored.slots.a), b: fromFile(stored.slots.b) } : { a: UNKNOWN, b: UNKNOWN },
    );
  }

  /**
   * The positions as last written, whatever journal they refer to (null when
   * there are none): what a store that lost its epoch file recovers from.
   */
  static async lastWritten(file: string): Promise<Record<SlotName, SlotPosition> | null> {
    const stored = await readPositions(file, null);
    return stored ? { a: fromFile(stored.slots.a), b: fromFile(stored.slots.b) } : null;
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
      slots: { a: { seq: next.a.seq, syncing: next.a.copying }, b: { seq: next.b.seq, syncing: next.b.copying } },
    };
    // compact, so it fits the one sector that is rewritten in place
    await writeSectorFile(this.#file, JSON.stringify(file));
    this.#positions = next;
  }
}
