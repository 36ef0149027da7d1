import { mkdir, readdir } from 'node:fs/promises';
import { setTimeout as delay } from 'node:timers/promises';
import { type EpochRecord, readEpochFile } from '../store/epoch-file.js';
import { type Heartbeat, readHeartbeats } from '../store/heartbeat.js';
import {
  ALL_SLOTS,
  SLOTS,
  type SlotName,
  type StoreLayout,
  isReservedRootName,
  otherSlot,
} from '../store/store-layout.js';
import type { Journal } from './master/journal.js';
import { publishEpoch } from '../store/publish.js';
import { AGENT_DEFAULTS } from './agent-defaults.js';
import { SlotPositions } from '../store/slot-positions.js';
import { type CopyStats, TreeCopier, syncFileSystems } from '../tree/tree-copy.js';
import type { VariantSettings } from '../tree/compressible.js';
import { defaultVariantSettings } from './variant-settings.js';
import { countTree } from '../tree/count-tree.js';

/** How long a store that lost its epoch file waits for live servers to report what they mount. */
const HEARTBEAT_GRACE_MS = 2500;

export interface InitResult {
  /** Master was mirrored into both slots and epoch 1 published: a new store. */
  created: boolean;
  /** The epoch file was missing from a store in use and was published again from what the store shows. */
  recovered: string | null;
  record: EpochRecord;
  /** Entries of master the copies left out because this process may not read them (a new store only). */
  unreadable: string[];
}

/**
 * What a store whose epoch file is missing was serving: from the servers'
 * heartbeats (the highest epoch any server reports, and the copy it mounts),
 * else from the slot positions (the copy last synced whole). Null for a
 * store that was never initialised.
 */
async function recoverMount(layout: StoreLayout): Promise<{ epoch: number; mounted: SlotName; why: string } | null> {
  const positions = await SlotPositions.lastWritten(layout.slotPositionsFile);
  const mounting = (hbs: Heartbeat[]) => hbs.filter((hb) => hb.mounted !== null && hb.epoch > 0);
  let heartbeats = mounting(await readHeartbeats(layout.serversDir));
  const slotsHoldSomething = async () => {
    for (const slot of ALL_SLOTS) {
      const names = await readdir(layout.slots[slot]).catch(() => []);
      if (names.some((n) => !isReservedRootName(n))) return true;
    }
    return false;
  };
  if (heartbeats.length === 0 && (positions || (await slotsHoldSomething()))) {
    // A store in use: servers rewrite their heartbeat every second or so, even one removed by hand.
    await delay(HEARTBEAT_GRACE_MS);
    heartbeats = mounting(await readHeartbeats(layout.serversDir));
  }
  if (heartbeats.length > 0) {
    const newest = heartbeats.reduce((x, y) => (y.epoch > x.epoch ? y : x));
    const mounts = [...new Set(heartbeats.map((hb) => `${hb.id} mounts slot ${hb.mounted} at epoch ${hb.epoch}`))];
    return {
      // one past anything a server may have seen, so no server takes it as going backwards
      epoch: newest.epoch + 1,
      mounted: newest.mounted as SlotName,
      why: `from the servers' heartbeats: ${mounts.join('; ')}`,
    };
  }
  if (!positions) return null;
  const complete = ALL_SLOTS.filter((s) => positions[s].seq !== null && !positions[s].copying);
  // Neither copy is known complete (a first `init` killed during its copy, say) and no server
  // mounts either: nothing may be published from them. The store is made anew, copies and all.
  if (complete.length === 0) return null;
  const best = complete.reduce((x, y) => ((positions[y].seq ?? -1) > (positions[x].seq ?? -1) ? y : x));
  return { epoch: 1, mounted: best, why: `from the slot positions: slot ${best} was synced last` };
}

/**
 * Create the store's directories and, when no epoch is published yet, mirror
 * master into both slots and publish epoch 1 mounting slot a: all three
 * start as mirror images. A store in use whose epoch file was lost is
 * recovered instead, without writing into either copy (a server may be
 * reading it): the epoch is published again mounting the copy the servers
 * report, and the next sync of each copy compares it whole.
 */
export async function initStore(
  layout: StoreLayout,
  journal: Journal,
  slots: SlotPositions,
  opts: {
    durable?: boolean;
    /** How the copies' variants are made (null: none); default the agent's (`AGENT_DEFAULTS`). */
    variants?: VariantSettings | null;
    lease?: number;
    /** Progress of each slot's copy, with master's totals when counted (see `withTotal`). */
    onProgress?: (slot: string, stats: CopyStats, total?: { files: number; bytes: number }) => void;
    /** Count master first, so the first copy's progress has a total (an ETA): one walk of master more. */
    withTotal?: boolean;
    /** The second copy hard-links the first's files instead of copying them (`--share-files`). */
    share?: boolean;
  } = {},
): Promise<InitResult> {
  for (const dir of [layout.master, layout.slots.a, layout.slots.b, layout.stateDir, layout.serversDir]) {
    await mkdir(dir, { recursive: true });
  }
  const existing = await readEpochFile(layout.epochFile);
  if (existing) return { created: false, recovered: null, record: existing, unreadable: [] };
  const recovered = await recoverMount(layout);
  if (recovered) {
    const record = await publishEpoch(layout, recovered.epoch, recovered.mounted, { lease: opts.lease });
    return { created: false, recovered: recovered.why, record, unreadable: [] };
  }
  const seq = journal.lastSeq;
  const total = opts.withTotal ? await countTree(layout.master) : undefined;
  const unreadable = new Set<string>();
  for (const slot of SLOTS) {
    // Made durable below, once for both: the second copy runs while the first is written back.
    const settings = opts.variants === undefined ? defaultVariantSettings() : opts.variants;
    const copier = new TreeCopier(layout.master, layout.slots[slot], {
      durable: false,
      // the second copy reuses the first's variants: one compression per file in all
      variants: settings && { settings, other: layout.slots[otherSlot(slot)] },
      share: opts.share ? layout.slots[otherSlot(slot)] : null,
      onProgress: opts.onProgress && ((s) => opts.onProgress?.(slot, s, total)),
      // an init killed during its copy left files there it never derived
      cutShort: slots.get(slot).copying,
    });
    await copier.clearTemp();
    await slots.set(slot, { seq: null, copying: true });
    await copier.mirrorAll();
    for (const rel of copier.unreadable) unreadable.add(rel);
  }
  // one syncfs per file system holding a slot; only then is either copy said to be complete
  if (opts.durable ?? AGENT_DEFAULTS.durable) await syncFileSystems(SLOTS.map((slot) => layout.slots[slot]));
  for (const slot of SLOTS) await slots.set(slot, { seq, copying: false });
  const record = await publishEpoch(layout, 1, 'a', { lease: opts.lease });
  return { created: true, recovered: null, record, unreadable: [...unreadable] };
}
