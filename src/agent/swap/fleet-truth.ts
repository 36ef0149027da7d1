import type { FleetEpoch } from '../../fleet/fleet-keys.js';
import { type AgentContext, setEpoch } from '../agent-context.js';
import { publishEpoch } from '../../store/publish.js';

/**
 * This store must serve what the fleet committed. A coordinator that
 * stopped (or lost etcd's answer) between its commit and its own publish
 * finds its copy named by the commit (same slot, same journal position) and
 * mounts it; that copy is again the snapshot hosts catch up from. Run when
 * elected and before each swap.
 */
export async function followCommitted(ctx: AgentContext, committed: FleetEpoch | null): Promise<void> {
  const fleet = ctx.fleet;
  if (!fleet || !committed) return;
  const slot = committed.coordinatorSlot;
  const held = ctx.slots.get(slot);
  if (held.copying || held.seq === null || held.seq !== committed.coordinatorSeq) {
    if (committed.epoch > ctx.epoch.epoch)
      ctx.log.error(
        { fleetEpoch: committed.epoch, slot, position: held },
        "this store's slot no longer holds the fleet's committed epoch: hosts that lack it catch up at the next swap",
      );
    return;
  }
  if (committed.epoch > ctx.epoch.epoch) {
    ctx.log.warn(
      { fleetEpoch: committed.epoch, local: ctx.epoch.epoch, slot },
      'the fleet committed an epoch this store had not published (its coordinator stopped after the commit): publishing it',
    );
    setEpoch(
      ctx,
      await publishEpoch(ctx.layout, committed.epoch, slot, {
        lease: ctx.opts.serverTtlMs,
        release: committed.release,
        current: ctx.epoch,
      }),
    );
  }
  if (ctx.epoch.mounted === slot && fleet.snapshots.idOf(slot) !== committed.snapshot)
    await fleet.snapshots.adopt(slot, committed.snapshot);
}
