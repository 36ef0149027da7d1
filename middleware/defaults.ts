/**
 * Every default of the middleware's options, in one place: `mirrorStatic`,
 * `mirrorProxy`, `mirrorswap serve`'s flags and their help, and the docs'
 * tables read them here. Durations are in milliseconds, sizes in bytes.
 */

/** Options every middleware shares: how the epoch file is followed and the heartbeat written. */
export const MOUNT_DEFAULTS = Object.freeze({
  watch: 'auto' as const,
  pollInterval: 250,
  heartbeatInterval: 1000,
  closeTimeout: 30_000,
  /** Skew protection: where a request names its release (Next.js's `?dpl=` and `x-deployment-id`, and a cookie). */
  pinQuery: 'dpl' as string | false,
  pinHeader: 'x-deployment-id' as string | false,
  pinCookie: '__dpl' as string | false,
});

/** The smallest values taken: below them a server would spend itself on polling or heartbeats. */
export const MOUNT_MINIMUMS = Object.freeze({
  pollInterval: 10,
  heartbeatInterval: 50,
});

/** mirrorStatic's options, serve-static's defaults where they share a name. */
export const STATIC_DEFAULTS = Object.freeze({
  index: Object.freeze(['index.html']) as readonly string[],
  dotfiles: 'ignore' as const,
  etag: true,
  lastModified: true,
  maxAge: 0,
  immutable: false,
  cacheControl: true,
  acceptRanges: true,
  extensions: Object.freeze([]) as readonly string[],
  fallthrough: true,
  redirect: true,
  /** Serve the precompressed variants the copy's content index lists. */
  precompressed: true,
  /** The response header naming the release a file came from (false: none). */
  releaseHeader: false as string | false,
  /** Skew protection for requests naming no release: hashed asset names (`HASHED_ASSET`) the mounted release lacks. */
  assetFallback: 'hashed' as RegExp | 'hashed' | false,
  /** Bytes of file bodies kept in memory per epoch. */
  cacheMaxBytes: 64 * 1024 * 1024,
  /** Largest file whose body is cached. */
  cacheMaxFileSize: 256 * 1024,
  /** Most paths (found, missing or refused) remembered per epoch. */
  cacheMaxEntries: 50_000,
});

/** mirrorProxy's options (and `serve --upstream`'s forwarding). */
export const PROXY_DEFAULTS = Object.freeze({
  connectTimeout: 5000,
  idleTimeout: 60_000,
  /** Under the agent's default drain timeout (30 s), so an open WebSocket never fails a swap. */
  upgradeDrainTimeout: 20_000,
  responseDrainTimeout: 20_000,
  changeOrigin: false,
  trustProxy: false,
  fallthrough: true,
  /** Request bodies up to this size are read whole before an upstream connection is taken (nginx buffers them too). */
  requestBufferSize: 64 * 1024,
  /** Bodies larger than that stream upstream, at most this many at once from one client address. */
  streamedBodiesPerClient: 16,
  /** Memory all buffered request bodies may hold at once; past it, a new body streams as a large one does. */
  requestBufferTotal: 64 * 1024 * 1024,
});
