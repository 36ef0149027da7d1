import type { AgentContext } from '../agent-context.js';
import type { ReconcileTrigger, RepairTrigger } from '../agent-types.js';
import { compareTrees } from '../../tree/compare-trees.js';
import { variantSettings } from '../variant-settings.js';
import { type SlotName, keptSlots } from '../../store/store-layout.js';

/** The last comparison of master, for status. */
export interface ReconcileResult {
  at: string;
  trigger: ReconcileTrigger;
  found: number;
}

/** Whether `path` or one of its ancestors is in `paths` (a directory path stands for its whole tree). */
function coveredBy(paths: ReadonlySet<string>, path: string): boolean {
  if (paths.has(path)) return true;
  for (let i = path.indexOf('/'); i >= 0; i = path.indexOf('/', i + 1)) if (paths.has(path.slice(0, i))) return true;
  return false;
}

/**
 * Compare master with the mounted copy and log every difference the journal
 * does not name, so both copies get it by their next sync: the journal is a
 * hint, and this makes it whole again. Covers the gaps logged before it.
 * Null when the comparison could not stand (the mounted copy is at no known
 * position, or the watcher could not confirm what happened during the walk).
 */
export async function reconcileMaster(ctx: AgentContext, trigger: ReconcileTrigger): Promise<ReconcileResult | null> {
  const slot = ctx.epoch.mounted;
  const pos = ctx.slots.get(slot);
  if (pos.seq === null || pos.copying) {
    ctx.log.warn({ slot }, `slot ${slot} is mounted at no known position: the next sync of each slot compares trees`);
    return null;
  }
  const position = pos.seq;
  const through = ctx.journal.lastSeq;
  const started = performance.now();
  const diffs = await ctx.walks.track('compare', slot, (onWalked) =>
    compareTrees(ctx.layout.master, ctx.layout.slots[slot], {
      onWalked,
      variants: variantSettings(ctx.opts) !== null,
    }),
  );
  // Changes made during the walk reach the journal by the watcher; wait for them to be recorded.
  if (ctx.watcher && !(await ctx.watcher.settle())) {
    ctx.incomplete('the master watcher could not confirm it saw every change during a comparison');
    return null;
  }
  const found = await logUnknownChanges(
    ctx,
    // an entry the agent may not read is no change the journal missed: no copy can take it yet
    diffs.filter((d) => d.kind !== 'unreadable').map((d) => d.path),
    // a copy newer than the mounted one (one a rollback left retained) must get them too
    newestTrustedPosition(ctx, keptSlots(ctx.opts.keep)) ?? position,
    trigger,
  );
  await ctx.journal.logReconciled(position, through);
  ctx.metrics.reconcileSeconds.observe((performance.now() - started) / 1000);
  return { at: new Date().toISOString(), trigger, found };
}

/**
 * The newest position of `slots` the journal trusts, null for none. What the
 * journal names since it, it names since every older position too: a
 * comparison's finds logged unless named since it reach every copy. Logged
 * unless named since the oldest, a find the journal names between the two
 * would never reach the newer copy: its next sync would leave it stale, and a
 * copy reused from it would take it stale (settled paths link from it).
 */
export function newestTrustedPosition(ctx: AgentContext, slots: readonly SlotName[]): number | null {
  let newest: number | null = null;
  for (const s of slots) {
    const at = ctx.slots.get(s);
    // a copy mid-copy too: its next sync takes the journal from its position again
    if (at.seq !== null && ctx.journal.trusts(at.seq) && (newest === null || at.seq > newest)) {
      newest = at.seq;
    }
  }
  return newest;
}

/**
 * Log, among `paths` found different by a comparison, those the journal
 * does not name since `position` (a directory named stands for its tree):
 * they are changes it missed, so every slot gets them by its next sync.
 * Counted and said; returns how many there were.
 */
export async function logUnknownChanges(
  ctx: AgentContext,
  paths: string[],
  position: number,
  trigger: RepairTrigger,
): Promise<number> {
  const known = new Set(ctx.journal.changedSince(position));
  const unknown = paths.filter((p) => !coveredBy(known, p));
  if (unknown.length === 0) return 0;
  await ctx.journal.logTouched(unknown);
  ctx.metrics.repairs.inc({ trigger }, unknown.length);
  const details = { trigger, changes: unknown.length, sample: unknown.slice(0, 20) };
  const msg = `master had ${unknown.length} changes the journal did not know; logged, so the next sync of each slot copies them`;
  // at start they are what changed while no agent ran; at any other time a missed event
  if (trigger === 'start') ctx.log.info(details, msg);
  else ctx.log.warn(details, msg);
  return unknown.length;
}
