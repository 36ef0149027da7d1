import { hostname } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import type { ServerResponse } from 'node:http';
import type { Stats } from 'node:fs';
import ms from 'ms';
import type { Registry } from 'prom-client';
import { isIntegerAtLeast } from '../src/core/checks.js';
import { SERVER_ID_PATTERN } from '../src/store/heartbeat.js';
import type { MiddlewareLogger } from '../src/core/logger.js';
import type { SlotName } from '../src/store/store-layout.js';
import { MOUNT_DEFAULTS, MOUNT_MINIMUMS, STATIC_DEFAULTS } from './defaults.js';
import { type CacheRule, type ResolvedCacheRule, resolveCacheRules } from './static/cache-rules.js';
import { HASHED_ASSET, type ReleasePinSources } from './mount/release-pins.js';

export type { CacheRule } from './static/cache-rules.js';

export type WatchMode = 'auto' | 'native' | 'poll';
export type DotfilesPolicy = 'allow' | 'deny' | 'ignore';

/** Options shared by every mirrorswap middleware: where the contract lives and how to follow it. */
export interface MountOptions {
  /** Store directory; the epoch file is `<store>/state/epoch.json`. */
  store?: string;
  /** Path of the epoch file, when it is not under a store. Heartbeats go to `servers/` beside it. */
  epochFile?: string;
  /** Override the slot roots named in the epoch file (for hosts that mount the store elsewhere). */
  roots?: Partial<Record<SlotName, string>>;
  serverId?: string;
  watch?: WatchMode;
  pollInterval?: number;
  heartbeatInterval?: number;
  /**
   * Longest wait of `close()` for the requests in flight to finish, in ms; the
   * heartbeat keeps reporting them meanwhile, so the agent never reuses their copy.
   */
  closeTimeout?: number;
  registry?: Registry;
  logger?: MiddlewareLogger;
  /**
   * Skew protection: the query parameter, header and cookie by which a
   * request names the release it belongs to (its id, or the epoch that
   * published it). A request naming a release the store retains is served
   * whole from it; one naming none (or one no longer retained) is served from
   * the mounted release. `false` turns a source off.
   */
  pinQuery?: string | false;
  pinHeader?: string | false;
  pinCookie?: string | false;
}

export interface StaticOptions extends MountOptions {
  index?: string | readonly string[] | false;
  dotfiles?: DotfilesPolicy;
  /**
   * `true`: a strong ETag from the content hash where the copy's content
   * index knows the file, serve-static's weak one otherwise; `'weak'`:
   * serve-static's weak one always; `false`: none.
   */
  etag?: boolean | 'weak';
  lastModified?: boolean;
  maxAge?: number | string;
  /** serve-static's lowercase alias of `maxAge` (used when `maxAge` is not given). */
  maxage?: number | string;
  immutable?: boolean;
  cacheControl?: boolean;
  acceptRanges?: boolean;
  extensions?: readonly string[] | false;
  fallthrough?: boolean;
  redirect?: boolean;
  setHeaders?: (res: ServerResponse, path: string, stat: Stats) => void;
  /** Serve the precompressed variants (`X.br`, `X.gz`) the copy's content index lists, by `Accept-Encoding`. */
  precompressed?: boolean;
  /**
   * A response header naming the release each file was served from: its
   * release id (`sync --release`), or its epoch number when its sync named
   * none. `false` (the default) sends none.
   */
  releaseHeader?: string | false;
  /** Path patterns mapped to Cache-Control, first match wins; resolved once per cache entry. */
  cacheRules?: readonly CacheRule[];
  /**
   * Skew protection for requests that name no release: a GET of a path the
   * mounted release lacks, matching this pattern, is served from the newest
   * retained release that has it. `'hashed'` (the default): hashed asset
   * names, as bundlers write them (`HASHED_ASSET`).
   */
  assetFallback?: RegExp | 'hashed' | false;
  /** Bytes of file bodies kept in memory per epoch. */
  cacheMaxBytes?: number;
  /** Largest file whose body is cached. */
  cacheMaxFileSize?: number;
  /** Most paths (found, missing or refused) remembered per epoch. */
  cacheMaxEntries?: number;
}

export interface ResolvedMountOptions {
  readonly epochFile: string;
  readonly serversDir: string;
  readonly roots: Readonly<Partial<Record<SlotName, string>>>;
  readonly serverId: string;
  readonly watch: WatchMode;
  readonly pollInterval: number;
  readonly heartbeatInterval: number;
  readonly closeTimeout: number;
  readonly registry: Registry | undefined;
  readonly logger: MiddlewareLogger | undefined;
  /** Where a request names its release (skew protection). */
  readonly pins: ReleasePinSources;
}

export interface ResolvedStaticOptions extends ResolvedMountOptions {
  readonly index: readonly string[];
  readonly dotfiles: DotfilesPolicy;
  /** 'content': strong from the content index where it knows the file, weak otherwise. */
  readonly etag: 'content' | 'weak' | false;
  readonly lastModified: boolean;
  /** Seconds, as sent in Cache-Control. */
  readonly maxAgeSeconds: number;
  readonly immutable: boolean;
  readonly cacheControl: boolean;
  readonly acceptRanges: boolean;
  readonly extensions: readonly string[];
  readonly fallthrough: boolean;
  readonly redirect: boolean;
  readonly setHeaders: StaticOptions['setHeaders'];
  readonly precompressed: boolean;
  readonly releaseHeader: string | false;
  readonly cacheRules: readonly ResolvedCacheRule[];
  readonly assetFallback: RegExp | false;
  readonly cacheMaxBytes: number;
  readonly cacheMaxFileSize: number;
  readonly cacheMaxEntries: number;
}

const MAX_AGE_CAP_MS = 365 * 24 * 60 * 60 * 1000;
let instanceCount = 0;

function fail(message: string): never {
  throw new TypeError(message);
}

/** A boolean option, or its default; a TypeError naming the option otherwise. */
export function booleanOption(value: unknown, name: string, dflt: boolean): boolean {
  if (value === undefined) return dflt;
  if (typeof value !== 'boolean') fail(`${name} option must be a boolean`);
  return value;
}

/** An integer option of at least `min` (0 allowed when `min` is 0), or its default; a TypeError naming the option otherwise. */
export function integerOption(value: unknown, name: string, dflt: number, min: number): number {
  if (value === undefined) return dflt;
  if (!isIntegerAtLeast(value, min)) {
    fail(`${name} option must be an integer >= ${min}`);
  }
  return value;
}

/** An http:// or https:// URL option, normalised; a TypeError naming the option otherwise. */
export function checkHttpUrl(value: unknown, name: string): string {
  let url: URL | undefined;
  try {
    url = new URL(String(value));
  } catch {
    url = undefined;
  }
  if (url?.protocol !== 'http:' && url?.protocol !== 'https:')
    fail(`${name} option must be an http:// or https:// URL`);
  return url.toString();
}

function defaultServerId(): string {
  instanceCount += 1;
  const host = hostname().replace(/[^A-Za-z0-9._-]/g, '_') || 'host';
  const base = `${host}-${process.pid}`;
  return instanceCount === 1 ? base : `${base}-${instanceCount}`;
}

export function resolveMountOptions(opts: MountOptions): ResolvedMountOptions {
  if (typeof opts !== 'object' || opts === null) fail('mirrorswap options must be an object');
  if (opts.store === undefined && opts.epochFile === undefined) {
    fail('store option (or epochFile) is required: the directory the mirrorswap agent manages');
  }
  if (opts.store !== undefined && typeof opts.store !== 'string') fail('store option must be a path string');
  if (opts.epochFile !== undefined && typeof opts.epochFile !== 'string')
    fail('epochFile option must be a path string');
  const epochFile = resolve(opts.epochFile ?? join(opts.store as string, 'state', 'epoch.json'));

  const roots: Partial<Record<SlotName, string>> = {};
  if (opts.roots !== undefined) {
    if (typeof opts.roots !== 'object' || opts.roots === null) fail('roots option must be an object like { a, b }');
    for (const [key, value] of Object.entries(opts.roots)) {
      // slots past b (a store keeping more releases) follow the epoch file's roots
      if (key !== 'a' && key !== 'b') fail(`roots option keys must be "a" or "b", got "${key}"`);
      if (typeof value !== 'string' || value === '') fail(`roots.${key} option must be a path string`);
      roots[key] = resolve(value);
    }
  }

  const serverId = opts.serverId ?? defaultServerId();
  if (typeof serverId !== 'string' || !SERVER_ID_PATTERN.test(serverId)) {
    fail('serverId option must be 1-128 characters of A-Z a-z 0-9 . _ - and not start with a dot');
  }
  const watch = opts.watch ?? MOUNT_DEFAULTS.watch;
  if (watch !== 'auto' && watch !== 'native' && watch !== 'poll') {
    fail('watch option must be "auto", "native", or "poll"');
  }
  const registry = opts.registry;
  if (registry !== undefined && (typeof registry !== 'object' || typeof registry.metrics !== 'function')) {
    fail('registry option must be a prom-client Registry');
  }
  const logger = opts.logger;
  if (logger !== undefined && (typeof logger.warn !== 'function' || typeof logger.error !== 'function')) {
    fail('logger option must have warn() and error() methods (pino-compatible)');
  }
  return Object.freeze({
    epochFile,
    serversDir: join(dirname(epochFile), 'servers'),
    roots: Object.freeze(roots),
    pins: Object.freeze({
      query: pinSource(opts.pinQuery, 'pinQuery', MOUNT_DEFAULTS.pinQuery, /^[A-Za-z0-9._~-]{1,64}$/),
      header: pinSource(opts.pinHeader, 'pinHeader', MOUNT_DEFAULTS.pinHeader, FIELD_NAME),
      cookie: pinSource(opts.pinCookie, 'pinCookie', MOUNT_DEFAULTS.pinCookie, FIELD_NAME),
    }),
    serverId,
    watch,
    pollInterval: integerOption(
      opts.pollInterval,
      'pollInterval',
      MOUNT_DEFAULTS.pollInterval,
      MOUNT_MINIMUMS.pollInterval,
    ),
    heartbeatInterval: integerOption(
      opts.heartbeatInterval,
      'heartbeatInterval',
      MOUNT_DEFAULTS.heartbeatInterval,
      MOUNT_MINIMUMS.heartbeatInterval,
    ),
    closeTimeout: integerOption(opts.closeTimeout, 'closeTimeout', MOUNT_DEFAULTS.closeTimeout, 0),
    registry,
    logger,
  });
}

/**
 * maxAge in seconds, as send (serve-static's engine) reads it: a number of ms
 * or a duration string, capped at one year (Infinity included), a negative
 * one counting as 0. Anything else is a mistake worth a TypeError.
 */
function resolveMaxAge(value: unknown, name: string): number {
  if (value === undefined) return STATIC_DEFAULTS.maxAge;
  let millis: number | undefined;
  if (typeof value === 'number') millis = value;
  else if (typeof value === 'string') millis = ms(value as ms.StringValue);
  if (millis === undefined || Number.isNaN(millis)) {
    fail(`${name} option must be milliseconds (a number) or a duration string like "1d"`);
  }
  return Math.floor(Math.min(Math.max(0, millis), MAX_AGE_CAP_MS) / 1000);
}

/** Every option mirrorStatic knows; any other is ignored, as serve-static does, with one warning. */
const STATIC_OPTIONS = new Set([
  'store',
  'epochFile',
  'roots',
  'serverId',
  'watch',
  'pollInterval',
  'heartbeatInterval',
  'closeTimeout',
  'registry',
  'logger',
  'index',
  'dotfiles',
  'etag',
  'lastModified',
  'maxAge',
  'maxage',
  'immutable',
  'cacheControl',
  'acceptRanges',
  'extensions',
  'fallthrough',
  'redirect',
  'setHeaders',
  'precompressed',
  'releaseHeader',
  'cacheRules',
  'pinQuery',
  'pinHeader',
  'pinCookie',
  'assetFallback',
  'cacheMaxBytes',
  'cacheMaxFileSize',
  'cacheMaxEntries',
]);
const warnedOptions = new Set<string>();

/** Warn once per process for an option mirrorStatic does not know: `maxage` for `maxAge` is the classic typo. */
function warnUnknownOptions(opts: object): void {
  for (const name of Object.keys(opts)) {
    if (STATIC_OPTIONS.has(name) || warnedOptions.has(name)) continue;
    warnedOptions.add(name);
    process.emitWarning(`mirrorStatic ignores the unknown option "${name}"`, {
      code: 'MIRRORSWAP_UNKNOWN_OPTION',
      detail: `known options: ${[...STATIC_OPTIONS].join(', ')}`,
    });
  }
}

function stringList(value: unknown, name: string, dflt: readonly string[]): readonly string[] {
  if (value === undefined) return dflt;
  if (value === false) return [];
  const list = typeof value === 'string' ? [value] : value;
  if (!Array.isArray(list) || list.some((v) => typeof v !== 'string' || v === '' || /[/\\\0]/.test(v))) {
    fail(`${name} option must be false, a file name, or an array of file names`);
  }
  return Object.freeze([...list]);
}

/** An HTTP field name (RFC 9110 5.1: a token), and none that framing or our own headers use. */
const FIELD_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}$/;
const TAKEN_FIELDS = new Set([
  'content-length',
  'content-type',
  'content-encoding',
  'content-range',
  'transfer-encoding',
  'connection',
  'etag',
  'last-modified',
  'cache-control',
  'accept-ranges',
  'vary',
  'location',
  'set-cookie',
]);

function resolveReleaseHeader(value: unknown): string | false {
  const header = value ?? STATIC_DEFAULTS.releaseHeader;
  if (header === false) return false;
  if (typeof header !== 'string' || !FIELD_NAME.test(header) || TAKEN_FIELDS.has(header.toLowerCase())) {
    return fail('releaseHeader option must be false or a header name of its own (a token, such as "X-Release")');
  }
  return header;
}

/** A pin source's name: `pattern` (a token of its kind), or false; the default when not given. */
function pinSource(value: unknown, name: string, dflt: string | false, pattern: RegExp): string | false {
  const v = value ?? dflt;
  if (v === false) return false;
  if (typeof v !== 'string' || !pattern.test(v))
    return fail(`${name} option must be false or a name matching ${pattern}`);
  return name === 'pinHeader' ? v.toLowerCase() : v;
}

function resolveAssetFallback(value: unknown): RegExp | false {
  const v = value ?? STATIC_DEFAULTS.assetFallback;
  if (v === 'hashed') return HASHED_ASSET;
  if (v === false || v instanceof RegExp) return v;
  return fail('assetFallback option must be "hashed", false, or a RegExp tested against the request path');
}

function resolveEtag(value: unknown): ResolvedStaticOptions['etag'] {
  const etag = value ?? STATIC_DEFAULTS.etag;
  if (etag === true) return 'content';
  if (etag === 'weak' || etag === false) return etag;
  return fail('etag option must be true, false, or "weak"');
}

export function resolveStaticOptions(opts: StaticOptions): ResolvedStaticOptions {
  const mount = resolveMountOptions(opts);
  warnUnknownOptions(opts);
  const dotfiles = opts.dotfiles ?? STATIC_DEFAULTS.dotfiles;
  if (dotfiles !== 'allow' && dotfiles !== 'deny' && dotfiles !== 'ignore') {
    fail('dotfiles option must be "allow", "deny", or "ignore"');
  }
  const extensions = stringList(opts.extensions, 'extensions', STATIC_DEFAULTS.extensions).map((e) =>
    e.startsWith('.') ? e.slice(1) : e,
  );
  if (opts.setHeaders !== undefined && typeof opts.setHeaders !== 'function') {
    fail('setHeaders option must be a function');
  }
  return Object.freeze({
    ...mount,
    index: stringList(opts.index, 'index', STATIC_DEFAULTS.index),
    dotfiles,
    etag: resolveEtag(opts.etag),
    lastModified: booleanOption(opts.lastModified, 'lastModified', STATIC_DEFAULTS.lastModified),
    maxAgeSeconds:
      opts.maxAge !== undefined ? resolveMaxAge(opts.maxAge, 'maxAge') : resolveMaxAge(opts.maxage, 'maxage'),
    immutable: booleanOption(opts.immutable, 'immutable', STATIC_DEFAULTS.immutable),
    cacheControl: booleanOption(opts.cacheControl, 'cacheControl', STATIC_DEFAULTS.cacheControl),
    acceptRanges: booleanOption(opts.acceptRanges, 'acceptRanges', STATIC_DEFAULTS.acceptRanges),
    extensions: Object.freeze(extensions),
    fallthrough: booleanOption(opts.fallthrough, 'fallthrough', STATIC_DEFAULTS.fallthrough),
    redirect: booleanOption(opts.redirect, 'redirect', STATIC_DEFAULTS.redirect),
    setHeaders: opts.setHeaders,
    precompressed: booleanOption(opts.precompressed, 'precompressed', STATIC_DEFAULTS.precompressed),
    releaseHeader: resolveReleaseHeader(opts.releaseHeader),
    cacheRules: resolveCacheRules(opts.cacheRules),
    assetFallback: resolveAssetFallback(opts.assetFallback),
    cacheMaxBytes: integerOption(opts.cacheMaxBytes, 'cacheMaxBytes', STATIC_DEFAULTS.cacheMaxBytes, 0),
    cacheMaxFileSize: integerOption(opts.cacheMaxFileSize, 'cacheMaxFileSize', STATIC_DEFAULTS.cacheMaxFileSize, 0),
    cacheMaxEntries: integerOption(opts.cacheMaxEntries, 'cacheMaxEntries', STATIC_DEFAULTS.cacheMaxEntries, 1),
  });
}
