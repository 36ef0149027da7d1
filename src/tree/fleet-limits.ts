import { SYSTEM_PATH_BYTES, SYSTEM_SEGMENT_BYTES } from '../core/path-limits.js';

/**
 * What a fleet host accepts from a coordinator, whatever it is sent: a
 * coordinator (or whoever can write the fleet's keys in etcd and point hosts
 * elsewhere) must not exhaust a host's memory or make it walk paths no tree
 * can hold. Each refusal names its bound. docs/FLEET.md lists them.
 */
export interface PullLimits {
  /**
   * Bytes of one manifest answer (its JSON): 256 MiB. A host reads it as it
   * comes into sorted runs on disk, an entry at a time
   * (`manifest-receive.ts`): this bounds the disk it takes (up to four
   * times the answer: runs and delta, a path twice a line), not the host's
   * memory. A million files with their hashes make some 190 MB. Its shape is
   * checked byte by byte before an element is parsed, so no bytes within the
   * bound parse into more values than its entries need.
   */
  manifestBytes: number;
  /** Entries of one manifest answer, changed and removed together. */
  manifestEntries: number;
  /** Bytes of one frame's JSON header (`{path, size}`). */
  frameHeaderBytes: number;
  /** Bytes of a path (PATH_MAX less its NUL) and of each of its segments (NAME_MAX). */
  pathBytes: number;
  segmentBytes: number;
  /** Segments of a path: what a path of `pathBytes` can have at most. */
  pathDepth: number;
  /** Bytes of a link's target. */
  linkTargetBytes: number;
  /**
   * The slowest a coordinator may send, in bytes a second on average over
   * the time a host waits for it (its own writes not counted), past a grace
   * of the pull's timeout: one that drips a byte now and then, never idle
   * long enough for the idle timer, is given up on.
   */
  minBytesPerSecond: number;
}

export const PULL_LIMITS: Readonly<PullLimits> = {
  manifestBytes: 256 * 1024 * 1024,
  manifestEntries: 2_000_000,
  frameHeaderBytes: 64 * 1024,
  pathBytes: SYSTEM_PATH_BYTES,
  segmentBytes: SYSTEM_SEGMENT_BYTES,
  pathDepth: (SYSTEM_PATH_BYTES + 1) / 2,
  linkTargetBytes: SYSTEM_PATH_BYTES,
  minBytesPerSecond: 64 * 1024,
};
