import { type EpochRecord, type RetainedRelease, readEpochFile, releaseEpochOf } from '../../store/epoch-file.js';
import { MirrorswapError } from '../../core/errors.js';
import { type SlotName, isSeed, keptSlots, otherSlot, seedSlot } from '../../store/store-layout.js';
import { inflightOn } from '../../store/heartbeat.js';
import { type StandbyChoice, inKept, nextStandby, rollbackChoice } from './retention.js';
import { retainedAfter, without } from '../../store/retained-releases.js';
import { type AgentContext, setEpoch } from '../agent-context.js';
import type { SwapKind, SwapRecord } from '../agent-types.js';
import { copyIntoSlot } from './copy-into-slot.js';
import { followCommitted } from './fleet-truth.js';
import { type WaitForServersOptions, waitForServers } from '../../store/drain.js';
import { runHook } from '../../store/hooks.js';
import type { SwapPhase } from '../api/metrics.js';
import { type PublishOptions, publishEpoch } from '../../store/publish.js';
import { type SwapAsked, rollbackRefusal, rollbackTargetRefusal } from './swap-queue.js';
import { emptyStats } from '../../tree/tree-copy.js';
import type { FleetCoordinator } from '../../fleet/coordinator/coordinator.js';
import type { FleetEpoch } from '../../fleet/fleet-keys.js';

/**
 * One swap, in the order of its phases:
 *
 * 0. take the epoch file's word over memory; for a rollback, check there is
 *    an older release to mount;
 * 1. **wait** until no live server mounts the standby or has requests on it;
 * 2. **copy** master into it (a sync only);
 * 3. **publish** the epoch that mounts it, once its recorded position vouches
 *    for it; then the on-mount hook;
 * 4. **drain**: wait until every live server has switched and has no request
 *    left on the old copy; then the on-unmount hook.
 *
 * Never throws: a failure is in the record. `onPublished` is called the
 * moment servers are told to switch (a swap can still fail after, in its
 * drain).
 */
export async function runSwap(
  ctx: AgentContext,
  kind: SwapKind,
  full: boolean,
  onPublished: () => void = () => {},
  asked: SwapAsked = {},
): Promise<SwapRecord> {
  await readEpochTruth(ctx);
  if (ctx.fleet?.elected) await followCommitted(ctx, await ctx.fleet.committed().catch(() => null));
  const current = ctx.epoch;
  const from = current.mounted;
  const keeping = ctx.opts.keep > 2;
  // Two copies: the other one. More: a free copy, else the oldest retained release's
  // (retired first); a rollback mounts a retained release as it is.
  let choice: StandbyChoice | null = null;
  let rollbackTo: RetainedRelease | null = null;
  let to: SlotName = otherSlot(from);
  let refusal: unknown = null;
  try {
    if (keeping && kind === 'rollback') rollbackTo = rollbackChoice(current, asked.to);
    else if (keeping || !isSeed(from)) choice = nextStandby(current, ctx.opts.keep, (s) => ctx.slots.get(s));
  } catch (err) {
    refusal = err;
  }
  if (rollbackTo) to = rollbackTo.slot;
  else if (choice) to = choice.slot;
  const record: SwapRecord = {
    kind,
    result: 'failed',
    epoch: current.epoch + 1,
    from,
    to,
    mode: 'none',
    startedAt: new Date().toISOString(),
    phases: {},
    copied: emptyStats(),
    dropped: [],
  };
  // a rollback mounts again the release the other slot held when the mounted one was published
  const release = kind === 'sync' ? asked.release : rollbackTo ? rollbackTo.release : current.previous?.release;
  if (release !== undefined) record.release = release;
  ctx.swapping = { kind, phase: 'wait' };
  let published = false;
  /** Frees what the copy replaced in the standby; started once the publish is out of the way. */
  let freeReplaced: (() => Promise<void>) | undefined;
  let freeing: Promise<void> | undefined;
  try {
    if (refusal) throw refusal;
    // a fleet swap is only ever committed by the elected coordinator: fail before copying
    ctx.fleet?.mustBeElected();
    if (kind === 'rollback' && !keeping) {
      const refused =
        rollbackRefusal(to, ctx.slots.get(to), ctx.slots.get(from)) ??
        (asked.to === undefined ? null : rollbackTargetRefusal(asked.to, current));
      if (refused) throw refused;
    }
    // 0. a retained release whose copy is reused leaves the epoch file first: pinned requests
    // stop going to it, and the copy is written once the servers say they let go of it
    // (a store back to two copies from more retires every retained release at once)
    const retiring = choice?.retire ?? null;
    const outside = (current.retained?.length ?? 0) - inKept(current.retained, ctx.opts.keep).length;
    const mustRetire =
      kind === 'sync' && (keeping ? retiring !== null || outside > 0 : (current.retained?.length ?? 0) > 0);
    if (mustRetire) {
      await phase(ctx, record, 'retire', async () => {
        if (retiring) noteReuse(ctx, record, retiring, choice?.early ?? false);
        const retired = await publish(ctx, current.epoch + 1, from, current.release, {
          since: releaseEpochOf(current),
          retained: inKept(without(current.retained, to), ctx.opts.keep),
        });
        setEpoch(ctx, retired);
        record.epoch = retired.epoch + 1;
      });
    }
    // Keeping releases, every live server must have read an epoch that does not retain the standby
    // (this sync's retire publish, or an earlier one that a failed or killed sync left behind):
    // one still on an older epoch may pin new requests to it at any moment.
    const letGo = ctx.epoch.epoch;
    const mustFollow = mustRetire || keeping;
    // 1. the standby must be free: no live server still mounts it or has requests on it
    // (a rollback of a store keeping more releases mounts a copy that stays as it is: no wait)
    const waited = rollbackTo
      ? { dropped: [] }
      : await phase(ctx, record, 'wait', async () => {
          // fleet hosts pulling from the standby finish first, and no new pull starts on it
          if (kind === 'sync' && ctx.fleet) await ctx.fleet.snapshots.release(seedSlot(to), ctx.opts.drainTimeoutMs);
          return waitForLiveServers(
            ctx,
            {
              what: `slot ${to} to be free before copying into it`,
              done: (hb) => inflightOn(hb, to) === 0 && hb.mounted !== to && (!mustFollow || hb.epoch >= letGo),
              describe: (hb) =>
                hb.mounted === to
                  ? `still mounts slot ${to} (epoch ${hb.epoch})`
                  : mustFollow && hb.epoch < letGo
                    ? `is still at epoch ${hb.epoch}, which serves slot ${to} to pinned requests`
                    : `still has ${inflightOn(hb, to)} requests in flight on slot ${to}`,
            },
            'server heartbeat went stale; no longer waiting for it',
          );
        });
    if (keeping && retiring) await hook(ctx, 'unmount', ctx.opts.onUnmount, ctx.epoch, to);
    record.dropped.push(...waited.dropped);
    // 2. copy master into it (a sync) — under the master lock, so no batch is split
    if (kind === 'sync')
      freeReplaced = await phase(ctx, record, 'copy', () => copyIntoSlot(ctx, to, from, full, record));
    await vouchFor(ctx, to);
    // 3a. in a fleet: every host prepares the copy, and one etcd transaction commits it
    const fleet = ctx.fleet ? await phase(ctx, record, 'prepare', () => commitToFleet(ctx, record, to)) : null;
    // 3. publish the epoch that mounts it, once its recorded state says it holds what was meant
    const next = await phase(ctx, record, 'publish', async () => {
      if (!fleet) await vouchFor(ctx, to);
      // keeping more releases: the one mounted until now stays servable to pinned requests
      const retention = keeping
        ? {
            retained: inKept(retainedAfter(ctx.epoch, to, ctx.opts.skewMaxAgeMs), ctx.opts.keep),
            since: rollbackTo?.epoch,
          }
        : {};
      return publish(ctx, record.epoch, to, record.release, retention);
    });
    published = true;
    onPublished();
    setEpoch(ctx, next);
    // freed while servers switch and drain; the swap ends when both are done
    freeing = free(ctx, freeReplaced);
    await hook(ctx, 'mount', ctx.opts.onMount, next, to);
    // 4. wait until every live server has switched and drained the old slot (keeping more
    // releases, the old slot stays retained: switched is enough; unless it is a slot past
    // --keep, lowered since it was mounted)
    const keepsOld = keeping && keptSlots(ctx.opts.keep).includes(from);
    const drained = await phase(ctx, record, 'drain', async () => {
      const hosts = fleet ? ctx.fleet?.awaitDrained(fleet, ctx.opts.drainTimeoutMs) : undefined;
      const local = await waitForLiveServers(
        ctx,
        {
          what: keepsOld
            ? `servers to switch to epoch ${next.epoch}`
            : `servers to switch to epoch ${next.epoch} and drain slot ${from}`,
          done: (hb) => hb.epoch >= next.epoch && (keepsOld || inflightOn(hb, from) === 0),
          describe: (hb) =>
            hb.epoch < next.epoch
              ? `is still at epoch ${hb.epoch}`
              : `still has ${inflightOn(hb, from)} requests in flight on slot ${from}`,
        },
        'server died during the drain; no longer waiting for it',
      );
      const remote = await hosts;
      return { dropped: [...local.dropped, ...(remote?.dropped.map((h) => `host ${h}`) ?? [])] };
    });
    record.dropped.push(...drained.dropped);
    if (!keepsOld) await hook(ctx, 'unmount', ctx.opts.onUnmount, next, from);
    record.result = 'ok';
    ctx.metrics.lastSuccess.set(Date.now() / 1000);
  } catch (err) {
    const e = err as MirrorswapError;
    record.result = published && e.code === 'DRAIN_TIMEOUT' ? 'drain_timeout' : 'failed';
    record.error = { code: e.code ?? 'INTERNAL', message: e.message };
  } finally {
    await (freeing ?? free(ctx, freeReplaced));
    ctx.swapping = null;
  }
  ctx.metrics.swaps.inc({ result: record.result, kind });
  logSwap(ctx, record);
  return record;
}

/** Free what a copy kept aside; a failure leaves it for the next copy into that slot to clear, and is logged. */
async function free(ctx: AgentContext, freeReplaced: (() => Promise<void>) | undefined): Promise<void> {
  try {
    await freeReplaced?.();
  } catch (err) {
    ctx.log.warn(
      { err: (err as Error).message },
      'cannot remove what the copy replaced; the next copy into the slot tries again',
    );
  }
}

/**
 * Make the swap a fleet one: the standby just copied becomes the snapshot
 * hosts pull, its epoch follows the fleet's highest, and the fleet commits
 * it (or the swap fails here, with nothing switched anywhere).
 */
async function commitToFleet(ctx: AgentContext, record: SwapRecord, slot: SlotName): Promise<FleetEpoch> {
  const fleet = ctx.fleet as FleetCoordinator;
  const seed = seedSlot(slot); // fleet mode keeps two copies (refused with --keep at start)
  const snapshot = fleet.snapshots.idOf(seed) ?? (await fleet.snapshots.take(seed));
  record.epoch = await fleet.nextEpoch(ctx.epoch.epoch);
  const committed = await fleet.commit({
    epoch: record.epoch,
    slot: seed,
    seq: ctx.slots.get(slot).seq,
    snapshot,
    release: record.release,
  });
  record.fleet = { members: committed.epoch.members, evicted: committed.evicted };
  return committed.epoch;
}

/** Run one phase of a swap, timing it into the record and the metrics. */
async function phase<T>(ctx: AgentContext, record: SwapRecord, name: SwapPhase, work: () => Promise<T>): Promise<T> {
  if (ctx.swapping) ctx.swapping.phase = name;
  const start = performance.now();
  try {
    return await work();
  } finally {
    const seconds = (performance.now() - start) / 1000;
    record.phases[name] = seconds;
    ctx.metrics.phaseSeconds.observe({ phase: name }, seconds);
  }
}

/**
 * Take the epoch file's word over memory before a swap: a publish whose
 * rename landed but whose directory fsync failed has servers on an epoch
 * the agent did not record. Going on from memory would copy into the copy
 * they mount.
 */
async function readEpochTruth(ctx: AgentContext): Promise<void> {
  let onDisk: EpochRecord | null;
  try {
    onDisk = await readEpochFile(ctx.layout.epochFile);
  } catch (err) {
    ctx.log.warn({ err: (err as Error).message }, 'cannot read the epoch file before a swap; going on from memory');
    return;
  }
  const known = ctx.epoch;
  if (!onDisk || (onDisk.epoch === known.epoch && onDisk.mounted === known.mounted)) return;
  const seen = {
    file: { epoch: onDisk.epoch, mounted: onDisk.mounted },
    memory: { epoch: known.epoch, mounted: known.mounted },
  };
  if (onDisk.epoch > known.epoch) {
    ctx.log.warn(
      seen,
      'the epoch file is ahead of what the agent recorded (a publish that failed after its rename?): following the file',
    );
    setEpoch(ctx, onDisk);
  } else {
    ctx.log.error(
      seen,
      'the epoch file was rewritten behind the agent with an older epoch, which servers ignore: the next publish supersedes it',
    );
  }
}

/**
 * Refuse to mount a slot whose recorded state does not say it holds a
 * complete copy at the position the agent meant: a copy that did not finish,
 * a positions file rewritten or lost behind the agent's back.
 */
async function vouchFor(ctx: AgentContext, slot: SlotName): Promise<void> {
  const meant = ctx.slots.get(slot);
  const recorded = await ctx.slots.recorded(slot);
  if (meant.seq !== null && !meant.copying && recorded?.seq === meant.seq && !recorded.copying) return;
  throw new MirrorswapError(
    'SLOT_NOT_VOUCHED',
    `slot ${slot} is not mounted: its recorded state (${recorded ? JSON.stringify(recorded) : 'unreadable'}) does not say it holds the complete copy meant (journal position ${meant.seq}${meant.copying ? ', copy unfinished' : ''}); run mirrorswap sync --full`,
  );
}

/** Write the epoch file; a rename that landed before a later step failed still counts, as servers follow it. */
async function publish(
  ctx: AgentContext,
  epoch: number,
  slot: SlotName,
  release: string | undefined,
  retention: Pick<PublishOptions, 'retained' | 'since'> = {},
): Promise<EpochRecord> {
  try {
    return await publishEpoch(ctx.layout, epoch, slot, {
      lease: ctx.opts.serverTtlMs,
      release,
      current: ctx.epoch,
      keep: ctx.opts.keep,
      ...retention,
    });
  } catch (err) {
    // The rename may have landed before what failed (the directory's fsync): then servers
    // follow the new epoch, and so must the agent.
    const onDisk = await readEpochFile(ctx.layout.epochFile).catch(() => null);
    if (onDisk?.epoch !== epoch || onDisk.mounted !== slot) throw err;
    ctx.log.error(
      { err: (err as Error).message },
      `epoch ${onDisk.epoch} is in place but could not be made durable; servers follow it, and so does the swap`,
    );
    return onDisk;
  }
}

/** A retained release's copy is about to be reused: say so in the record, and when early, log and count it. */
function noteReuse(ctx: AgentContext, record: SwapRecord, retiring: RetainedRelease, early: boolean): void {
  record.reused = {
    epoch: retiring.epoch,
    ...(retiring.release !== undefined ? { release: retiring.release } : {}),
    early,
  };
  if (!early) return;
  ctx.metrics.earlyReuse.inc();
  ctx.log.warn(
    { slot: retiring.slot, epoch: retiring.epoch, release: retiring.release, until: retiring.until },
    `every copy holds a release younger than --skew-max-age: reusing the oldest (epoch ${retiring.epoch}) anyway; requests pinned to it get the mounted release from now on (keep more releases with --keep)`,
  );
}

/** Wait on the live servers' heartbeats, bounded by --drain-timeout, logging each server dropped as dead. */
function waitForLiveServers(
  ctx: AgentContext,
  check: Pick<WaitForServersOptions, 'what' | 'done' | 'describe'>,
  droppedMessage: string,
): Promise<{ waitedMs: number; dropped: string[] }> {
  return waitForServers({
    ...check,
    serversDir: ctx.layout.serversDir,
    ttlMs: ctx.opts.serverTtlMs,
    timeoutMs: ctx.opts.drainTimeoutMs,
    onDropped: (hb) => ctx.log.warn({ server: hb.id, host: hb.host, pid: hb.pid }, droppedMessage),
  });
}

/** Run an operator hook; its failure is counted and logged, never fails the swap. */
async function hook(
  ctx: AgentContext,
  name: 'mount' | 'unmount',
  command: string | undefined,
  epoch: EpochRecord,
  slot: SlotName,
): Promise<void> {
  if (!command) return;
  try {
    await runHook(`on-${name}`, command, {
      MIRRORSWAP_EPOCH: String(epoch.epoch),
      MIRRORSWAP_SLOT: slot,
      MIRRORSWAP_ROOT: ctx.layout.slots[slot],
      MIRRORSWAP_STORE: ctx.layout.root,
    });
  } catch (err) {
    ctx.metrics.hookFailures.inc({ hook: name });
    ctx.log.error({ hook: name, err: (err as Error).message }, `on-${name} hook failed`);
  }
}

function logSwap(ctx: AgentContext, record: SwapRecord): void {
  const level = record.result === 'ok' ? 'info' : 'error';
  ctx.log[level](
    {
      swap: {
        ...record,
        phases: Object.fromEntries(Object.entries(record.phases).map(([k, v]) => [k, Math.round(v * 1e6) / 1e6])),
      },
    },
    record.result === 'ok'
      ? `swap to epoch ${record.epoch}${named(record)} done`
      : `swap to epoch ${record.epoch}${named(record)} ${record.result}: ${record.error?.message}`,
  );
}

/** ", release ID" when the swap's release has one. */
function named(record: SwapRecord): string {
  return record.release === undefined ? '' : `, release ${record.release}`;
}
