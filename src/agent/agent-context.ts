import type { EpochRecord } from '../store/epoch-file.js';
import type { Logger } from '../core/logger.js';
import type { FleetCoordinator } from '../fleet/coordinator/coordinator.js';
import type { StoreLayout } from '../store/store-layout.js';
import type { ResolvedAgentOptions, SwapProgress } from './agent-types.js';
import type { Journal } from './master/journal.js';
import type { MasterWalks } from './master/master-walks.js';
import type { MasterWatcher } from './master/master-watcher.js';
import type { MasterWriter } from './master/master-writer.js';
import type { Precompress } from './master/precompress.js';
import type { AgentMetrics } from './api/metrics.js';
import type { SlotPositions } from '../store/slot-positions.js';

/**
 * What the agent's parts (the swap, the copy, the comparison with master)
 * share: the store, its journal and positions, and the two facts that change
 * as swaps run. The agent owns it; the parts read and update it.
 */
export interface AgentContext {
  readonly layout: StoreLayout;
  readonly opts: ResolvedAgentOptions;
  readonly log: Logger;
  readonly metrics: AgentMetrics;
  readonly journal: Journal;
  readonly slots: SlotPositions;
  readonly writer: MasterWriter;
  /** Variants compressed as files land in master (`--precompress`); undefined when off. */
  readonly precompress: Precompress | undefined;
  /** The watcher of master; undefined when master is not watched (or not yet). */
  watcher: MasterWatcher | undefined;
  /** The epoch published last, as the agent knows it. */
  epoch: EpochRecord;
  /** The swap under way, for status. */
  swapping: SwapProgress | null;
  /** Whole walks of master under way, and master's size in entries as the last one found it. */
  readonly walks: MasterWalks;
  /** The fleet this agent coordinates (`--etcd`); undefined on a single host. */
  readonly fleet: FleetCoordinator | undefined;
  /** Say that changes to master may have been missed: logs a gap and schedules a comparison. */
  incomplete(reason: string): void;
}

/** Record the epoch the servers now follow, in memory and in the metric. */
export function setEpoch(ctx: AgentContext, record: EpochRecord): void {
  ctx.epoch = record;
  ctx.metrics.mounted(record);
}
