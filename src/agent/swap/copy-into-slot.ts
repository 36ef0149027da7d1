import { mkdir } from 'node:fs/promises';
import { type SlotName, isSeed, keptSlots } from '../../store/store-layout.js';
import type { AgentContext } from '../agent-context.js';
import type { SwapRecord } from '../agent-types.js';
import { logUnknownChanges, newestTrustedPosition } from './reconcile.js';
import { TreeCopier } from '../../tree/tree-copy.js';
import { variantSettings } from '../variant-settings.js';
import { staleVariantSelectionSync } from '../../tree/variant-selection.js';

/** A copy keeps what it replaces until after the publish, up to this many bytes of replaced files. */
const KEEP_REPLACED_BYTES = 256 * 1024 * 1024;

/**
 * The copy step of a sync: bring `slot` to master's present state, from the
 * journal when it can be trusted from the slot's position, else by comparing
 * whole trees. The slot is marked mid-copy (its content mixed) until the copy
 * is complete and durable; then the journal is compacted to what both slots
 * still need. Returns what frees the entries the copy replaced or deleted,
 * kept aside in the slot's temp directory: the swap calls it once it has
 * published, so freeing them is not on the way to the publish.
 */
export async function copyIntoSlot(
  ctx: AgentContext,
  slot: SlotName,
  mounted: SlotName,
  full: boolean,
  record: SwapRecord,
): Promise<() => Promise<void>> {
  // the copy has the cores; entries being made are finished first, for the copy to link
  await ctx.precompress?.pause();
  try {
    return await copyExclusive(ctx, slot, mounted, full, record);
  } finally {
    ctx.precompress?.resume();
  }
}

async function copyExclusive(
  ctx: AgentContext,
  slot: SlotName,
  mounted: SlotName,
  full: boolean,
  record: SwapRecord,
): Promise<() => Promise<void>> {
  // never a copy of half a batch: the writer finishes one a failure left first
  return ctx.writer.exclusive(async () => {
    // Every change made to master before this point must be in the journal before it is read.
    if (ctx.watcher && !(await ctx.watcher.settle())) {
      ctx.incomplete('the master watcher could not confirm it saw every change before a sync');
    }
    const pos = ctx.slots.get(slot);
    const seq = ctx.journal.lastSeq;
    // The journal is trusted only from positions no gap came after; else the trees are compared.
    const incremental = !full && pos.seq !== null && ctx.journal.trusts(pos.seq);
    const changed = incremental ? ctx.journal.changedSince(pos.seq as number) : [];
    const settings = variantSettings(ctx.opts);
    // a copy past the seed's two is made the first time a sync writes into it
    if (!isSeed(slot)) await mkdir(ctx.layout.slots[slot], { recursive: true });
    const copier = new TreeCopier(ctx.layout.master, ctx.layout.slots[slot], {
      durable: ctx.opts.durable,
      // variants of what changes, reusing the mounted copy's for the same content (read only)
      // (and the variant cache's, compressed as files landed in master: precompress.ts)
      variants: settings && { settings, other: ctx.layout.slots[mounted], cache: ctx.precompress?.cacheForSync },
      // unchanged files linked from the mounted copy, never written there (share-files.ts)
      share: ctx.opts.shareFiles ? ctx.layout.slots[mounted] : null,
      settled: ctx.opts.shareFiles && incremental ? settledPaths(ctx, changed, mounted) : undefined,
      // Freeing what a copy replaces waits until the swap has published (it runs while the
      // servers switch and drain): what the standby holds was written a release or more ago,
      // and freeing such an inode costs ten times moving it aside on an ext4 disk whose
      // allocation metadata has gone cold.
      keepReplacedBytes: KEEP_REPLACED_BYTES,
      // a copy cut short placed files it never derived (nor does the journal name them all): derived now
      cutShort: pos.copying,
    });
    if (ctx.swapping) ctx.swapping.copied = copier.stats;
    record.mode = incremental ? 'incremental' : 'full';
    // a copy whose variants follow other settings is derived whole (tree-copy.ts), changes or none
    const reselects = () => settings !== null && staleVariantSelectionSync(ctx.layout.slots[slot], settings) !== null;
    if (incremental && changed.length === 0 && !pos.copying && !reselects()) {
      // Nothing to copy: the slot's content stands, so it is never marked as
      // mixed; its position is written only if the journal moved on.
      if (pos.seq !== seq) await ctx.slots.set(slot, { seq, copying: false });
    } else {
      await ctx.slots.set(slot, { seq: pos.seq, copying: true });
      await copier.clearTemp();
      if (incremental) await copier.copyPaths(changed);
      else {
        // what the journal recorded since the slot's position, gap or not, is a change all the same:
        // copied too, as the compare by size and mtime misses a rewrite that kept both
        const recorded = pos.seq !== null ? ctx.journal.changedSince(pos.seq) : [];
        await passOn(
          ctx,
          slot,
          await ctx.walks.track('sync', slot, (onWalked) => copier.mirrorAll(onWalked, recorded)),
        );
      }
      await ctx.slots.set(slot, { seq, copying: false });
    }
    if (copier.skipped.length > 0) {
      ctx.log.error(
        { slot, skipped: copier.skipped.slice(0, 20), count: copier.skipped.length },
        `left out ${copier.skipped.length} entries of master that slot ${slot}'s file system cannot hold (a name or path too long): rename them in master`,
      );
    }
    const unreadable = knownUnreadable(ctx, incremental ? changed : null, copier.unreadable);
    if (unreadable.length > 0) {
      record.unreadable = unreadable.slice(0, 100);
      ctx.log.error(
        { slot, unreadable: unreadable.slice(0, 20), count: unreadable.length },
        `cannot read ${unreadable.length} entries of master (their mode, or a parent directory's, shuts the agent out): left as they were in slot ${slot}; give the agent's user read access`,
      );
    }
    ctx.metrics.unreadable.set(unreadable.length);
    if (copier.reselected) {
      ctx.log.info(
        { slot, variants: copier.variantStats },
        `derived slot ${slot} whole for the variant settings (codings, types, size and saving floors): its variants followed others, or it recorded none`,
      );
    }
    record.copied = { ...copier.stats };
    if (ctx.opts.shareFiles) record.shared = copier.sharedFiles;
    if (settings) record.variants = { ...copier.variantStats };
    ctx.precompress?.taken(slot, copier.cacheTaken);
    ctx.metrics.copiedFiles.inc(copier.stats.files);
    ctx.metrics.copiedBytes.inc(copier.stats.bytes);
    ctx.metrics.deletedFiles.inc(copier.stats.deleted);
    await compactJournal(ctx);
    return () => copier.clearTemp();
  });
}

/**
 * Of `changed` (what master changed since the slot's position), the paths
 * it has not changed since the mounted copy's position: that copy's entry
 * there is what a copy of master's would be now, by the journal the copy
 * trusts anyway. A copy reused four releases behind (`--keep 5`) takes four
 * releases' paths; all but the last release's are then linked from the
 * mounted copy unread, so its sync reads from master what a sync into a
 * copy one release behind reads. Empty when the mounted copy is mixed, is
 * not ahead of the slot, or the journal does not trust its position. A path
 * under one changed since (a directory renamed over it) and a known
 * unreadable path (left stale in every copy) are never settled.
 */
function settledPaths(ctx: AgentContext, changed: readonly string[], mounted: SlotName): Set<string> | undefined {
  const at = ctx.slots.get(mounted);
  if (at.copying || at.seq === null || !ctx.journal.trusts(at.seq)) return undefined;
  const since = new Set(ctx.journal.changedSince(at.seq));
  const unreadable = unreadableOf.get(ctx);
  const settled = new Set<string>();
  // a path under one changed since (a directory renamed over, say) may hold other bytes now
  for (const p of changed) if (!(unreadable && atOrUnder(unreadable, p)) && !atOrUnder(since, p)) settled.add(p);
  return settled.size > 0 ? settled : undefined;
}

/** Whether `paths` holds the path `p` or a directory above it. */
function atOrUnder(paths: ReadonlySet<string>, p: string): boolean {
  for (let i = p.length; i > 0; i = p.lastIndexOf('/', i - 1)) if (paths.has(p.slice(0, i))) return true;
  return false;
}

/** The entries of master last known unreadable, by agent. */
const unreadableOf = new WeakMap<AgentContext, Set<string>>();

/**
 * The entries of master the agent may not read, as far as it knows after a
 * sync: a full one (`touched` null) walked master and found `found`; an
 * incremental one looked only at what the journal `touched`, so what it
 * knew before stands for every other path (a `0000` file no later change
 * named is still unreadable and still missing from the copy). A path
 * touched, or under one touched, leaves the set unless found again.
 */
function knownUnreadable(ctx: AgentContext, touched: readonly string[] | null, found: readonly string[]): string[] {
  let known = unreadableOf.get(ctx);
  if (!known || touched === null) {
    known = new Set();
    unreadableOf.set(ctx, known);
  } else if (touched.length > 0 && known.size > 0) {
    const paths = new Set(touched);
    for (const p of known) if (atOrUnder(paths, p)) known.delete(p);
  }
  for (const p of found) known.add(p);
  return [...known].sort();
}

/**
 * A full compare of `slot` found `found` different. Whatever of it the
 * journal did not name since the other slot's position is logged, so the
 * other slot gets it too by its next sync (when it syncs from the journal;
 * otherwise it is compared whole anyway).
 */
async function passOn(ctx: AgentContext, slot: SlotName, found: string[]): Promise<void> {
  // against the newest position of the store's other copies the journal trusts: named since
  // it is named since every older one (newestTrustedPosition)
  const newest = newestTrustedPosition(
    ctx,
    keptSlots(ctx.opts.keep).filter((s) => s !== slot),
  );
  if (found.length === 0 || newest === null) return;
  await logUnknownChanges(ctx, found, newest, 'full_sync');
}

/** Drop the journal's entries every copy of the store has. */
async function compactJournal(ctx: AgentContext): Promise<void> {
  const seqs = keptSlots(ctx.opts.keep).map((s) => ctx.slots.get(s).seq);
  if (seqs.some((seq) => seq === null)) return;
  try {
    await ctx.journal.compact(Math.min(...(seqs as number[])));
  } catch (err) {
    // housekeeping: the copy stands, and the journal is rewritten compact on a later try
    ctx.log.warn({ err: (err as Error).message }, 'journal compaction failed; it is tried again later');
  }
}
