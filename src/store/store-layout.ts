import { join, resolve } from 'node:path';

export type SlotName = 'a' | 'b';
export const SLOTS: readonly SlotName[] = ['a', 'b'];

export function otherSlot(slot: SlotName): SlotName {
  return slot === 'a' ? 'b' : 'a';
}

/**
 * Name of the directory, inside master and each slot, that holds files being
 * written before they are renamed into place. Rename needs the same file
 * system, and slots may be separate disks, so each tree has its own. It is
 * never served, copied or compared.
 */
export const TEMP_DIR_NAME = '.mirrorswap-tmp';

/**
 * Name of the directory, at the root of each slot, holding what the agent
 * derives from a copy (the content index: content-index.ts). Reserved in
 * master as the temp directory is, so no file of master can stand there.
 */
export const META_DIR_NAME = '.mirrorswap-meta';

/** Names at the root of master and of each slot that belong to mirrorswap: never written, served, copied or compared. */
export const RESERVED_ROOT_NAMES: readonly string[] = Object.freeze([TEMP_DIR_NAME, META_DIR_NAME]);

/** True when `name`, an entry at the root of master or of a slot, is one of `RESERVED_ROOT_NAMES`. */
export function isReservedRootName(name: string): boolean {
  return name === TEMP_DIR_NAME || name === META_DIR_NAME;
}

/** True when the relative path `rel` is a reserved root entry or lies below one. */
export function isReservedPath(rel: string): boolean {
  const slash = rel.indexOf('/');
  return isReservedRootName(slash === -1 ? rel : rel.slice(0, slash));
}

/** Every path of a store, resolved once. */
export interface StoreLayout {
  readonly root: string;
  readonly master: string;
  readonly slots: Readonly<Record<SlotName, string>>;
  readonly stateDir: string;
  readonly epochFile: string;
  readonly serversDir: string;
  readonly journalFile: string;
  /** Each slot's journal position (`SlotPositions`). */
  readonly slotPositionsFile: string;
  readonly lockFile: string;
}

export interface StoreLayoutOverrides {
  master?: string;
  a?: string;
  b?: string;
  state?: string;
}

/** The embedded default store, relative to the working directory. */
export const DEFAULT_STORE = 'var/mirrorswap';

export function storeLayout(root: string, overrides: StoreLayoutOverrides = {}): StoreLayout {
  const abs = resolve(root);
  const stateDir = resolve(abs, overrides.state ?? 'state');
  return Object.freeze({
    root: abs,
    master: resolve(abs, overrides.master ?? 'master'),
    slots: Object.freeze({ a: resolve(abs, overrides.a ?? 'a'), b: resolve(abs, overrides.b ?? 'b') }),
    stateDir,
    epochFile: join(stateDir, 'epoch.json'),
    serversDir: join(stateDir, 'servers'),
    journalFile: join(stateDir, 'journal.jsonl'),
    slotPositionsFile: join(stateDir, 'slots.json'),
    lockFile: join(stateDir, 'agent.lock'),
  });
}
