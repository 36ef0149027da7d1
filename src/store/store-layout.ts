import { join, resolve } from 'node:path';

/**
 * A copy of the store. Every store has the seed's two, a and b; one that
 * keeps more releases (`--keep K`) has the next letters too, up to h.
 */
export type SlotName = 'a' | 'b' | 'c' | 'd' | 'e' | 'f' | 'g' | 'h';
/** One of the seed's two copies: what every store has, and all a store of `--keep 2` (the default) uses. */
export type SeedSlot = 'a' | 'b';
export const SLOTS: readonly SeedSlot[] = ['a', 'b'];
/** Every slot a store may have, in order: a store keeping K releases uses the first K. */
export const ALL_SLOTS: readonly SlotName[] = ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h'];
/** The most releases a store keeps (`--keep`). */
export const MAX_KEEP = ALL_SLOTS.length;

/**
 * Something per slot: always for the seed's two, for the others of a store
 * keeping more releases when it has them.
 */
export type SlotMap<T> = { a: T; b: T } & { [K in SlotName]?: T };

/** True when `value` names a slot. */
export function isSlotName(value: unknown): value is SlotName {
  return typeof value === 'string' && (ALL_SLOTS as readonly string[]).includes(value);
}

/** The slots of a store keeping `keep` releases. */
export function keptSlots(keep: number): readonly SlotName[] {
  return ALL_SLOTS.slice(0, Math.max(2, Math.min(keep, MAX_KEEP)));
}

/** True for a and b. */
export function isSeed(slot: SlotName): slot is SeedSlot {
  return slot === 'a' || slot === 'b';
}

/** The other seed slot: a store of two copies swaps between a and b. */
export function otherSlot(slot: SlotName): SeedSlot {
  return slot === 'a' ? 'b' : 'a';
}

/**
 * `slot` as one of the seed's two, for what works with two copies only (fleet
 * mode, the nginx companion, the proxy's two upstreams): they refuse a store
 * keeping more at start, so meeting another slot here is a broken promise.
 */
export function seedSlot(slot: SlotName): SeedSlot {
  if (slot === 'a' || slot === 'b') return slot;
  throw new Error(`slot ${slot} is not one of a and b; this part of mirrorswap works with two copies only`);
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
  /** Variants compressed as files land in master, for syncs to link (`tree/variant-cache.ts`). */
  readonly variantCacheDir: string;
  /** A fleet coordinator's manifests of its snapshots and the answers made of them (`tree/manifest-file.ts`). */
  readonly fleetManifestsDir: string;
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
    // every slot a store may have: those past b are used only by a store keeping more releases
    slots: Object.freeze(
      Object.fromEntries(
        ALL_SLOTS.map((s) => [s, resolve(abs, (s === 'a' || s === 'b' ? overrides[s] : undefined) ?? s)]),
      ),
    ) as Readonly<Record<SlotName, string>>,
    stateDir,
    epochFile: join(stateDir, 'epoch.json'),
    serversDir: join(stateDir, 'servers'),
    journalFile: join(stateDir, 'journal.jsonl'),
    slotPositionsFile: join(stateDir, 'slots.json'),
    lockFile: join(stateDir, 'agent.lock'),
    variantCacheDir: join(stateDir, 'variant-cache'),
    fleetManifestsDir: join(stateDir, 'fleet-manifests'),
  });
}
