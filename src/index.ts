export { mirrorStatic, type MirrorStatic, type PinnedMount } from '../middleware/mirror-static.js';
export type { StaticOptions, MountOptions, WatchMode, DotfilesPolicy, Logger } from '../middleware/options.js';
export { metricsHandler } from '../middleware/metrics.js';
export { mirrorProxy, type MirrorProxy, type ProxyOptions } from '../middleware/mirror-proxy.js';
export { type EpochRecord, EPOCH_FORMAT, readEpochFile, parseEpochRecord } from './epoch-file.js';
export { type Heartbeat, readHeartbeats } from './heartbeat.js';
export { MirrorswapError } from './errors.js';
export { type SlotName, type StoreLayout, storeLayout, DEFAULT_STORE } from './store-layout.js';
