import { MOUNT_DEFAULTS, MOUNT_MINIMUMS, STATIC_DEFAULTS } from '../../middleware/defaults.js';
import type { CacheRule, StaticOptions, WatchMode } from '../../middleware/options.js';
import { resolveStaticOptions } from '../../middleware/options.js';
import { resolveCacheRules } from '../../middleware/static/cache-rules.js';
import type { Logger } from '../core/logger.js';
import type { StoreLayout } from '../store/store-layout.js';
import { type FlagSpecs, type FlagValues, UsageError, durationFlag, formatDuration, stringFlag } from './flags.js';

/** The web server's listener, shared by `serve` and `up`. */
export const SERVE_LISTEN_FLAG: FlagSpecs[string] = {
  type: 'string',
  env: 'MIRRORSWAP_SERVE_LISTEN',
  default: '127.0.0.1:8080',
  arg: 'HOST:PORT',
  help: 'web server listener',
};

/** How the web server follows the store, shared by `serve` and `up`; defaults from the middleware's tables. */
export const MOUNT_FLAGS: FlagSpecs = {
  'server-id': { type: 'string', env: 'MIRRORSWAP_SERVER_ID', arg: 'ID', help: 'heartbeat id (default: host-pid)' },
  watch: {
    type: 'string',
    env: 'MIRRORSWAP_WATCH',
    default: MOUNT_DEFAULTS.watch,
    arg: 'MODE',
    help: 'epoch watching: auto, native or poll',
  },
  'poll-interval': {
    type: 'string',
    env: 'MIRRORSWAP_POLL_INTERVAL',
    default: formatDuration(MOUNT_DEFAULTS.pollInterval),
    arg: 'DURATION',
    help: 'epoch poll period',
  },
  'heartbeat-interval': {
    type: 'string',
    env: 'MIRRORSWAP_HEARTBEAT_INTERVAL',
    default: formatDuration(MOUNT_DEFAULTS.heartbeatInterval),
    arg: 'DURATION',
    help: "how often the heartbeat file is rewritten (keep well under the agent's --server-ttl)",
  },
  'max-age': {
    type: 'string',
    env: 'MIRRORSWAP_MAX_AGE',
    default: formatDuration(STATIC_DEFAULTS.maxAge),
    arg: 'DURATION',
    help: 'Cache-Control max-age',
  },
  'cache-rule': {
    type: 'string',
    multiple: true,
    env: 'MIRRORSWAP_CACHE_RULES',
    arg: 'PATTERN=VALUE',
    help: 'Cache-Control VALUE for files matching PATTERN (a glob, or re:REGEXP; \\= for a = of its own); repeatable, first match wins',
  },
  precompressed: {
    type: 'boolean',
    env: 'MIRRORSWAP_PRECOMPRESSED',
    default: STATIC_DEFAULTS.precompressed,
    help: 'serve the precompressed variants the content index lists (--no-precompressed: never)',
  },
  'release-header': {
    type: 'string',
    env: 'MIRRORSWAP_RELEASE_HEADER',
    arg: 'NAME',
    help: 'send this response header naming the release each file came from (its id, or its epoch)',
  },
  'pin-query': {
    type: 'string',
    env: 'MIRRORSWAP_PIN_QUERY',
    default: String(MOUNT_DEFAULTS.pinQuery),
    arg: 'NAME',
    help: 'skew protection: the query parameter naming the release a request belongs to (off: none)',
  },
  'pin-header': {
    type: 'string',
    env: 'MIRRORSWAP_PIN_HEADER',
    default: String(MOUNT_DEFAULTS.pinHeader),
    arg: 'NAME',
    help: 'skew protection: the request header naming it (off: none)',
  },
  'pin-cookie': {
    type: 'string',
    env: 'MIRRORSWAP_PIN_COOKIE',
    default: String(MOUNT_DEFAULTS.pinCookie),
    arg: 'NAME',
    help: 'skew protection: the cookie naming it, ignored on navigations (off: none)',
  },
  'asset-fallback': {
    type: 'string',
    env: 'MIRRORSWAP_ASSET_FALLBACK',
    default: String(STATIC_DEFAULTS.assetFallback),
    arg: 'MODE',
    help: 'skew protection for requests naming no release: hashed (asset names as bundlers write them), re:REGEXP, or off',
  },
  etag: {
    type: 'string',
    env: 'MIRRORSWAP_ETAG',
    default: 'content',
    arg: 'MODE',
    help: 'content (strong from the content hash where known, else weak), weak, or off',
  },
};

/**
 * Where a `--cache-rule`'s pattern ends: its first `=` not written `\=` (a glob and a RegExp both read
 * `\=` as a literal `=`, so the pattern is taken as written); -1 when there is none.
 */
function patternEnd(line: string): number {
  let escaped = false;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (escaped) escaped = false;
    else if (c === '\\') escaped = true;
    else if (c === '=') return i;
  }
  return -1;
}

/**
 * `--cache-rule` values (one a line): PATTERN=VALUE, the first `=` not written `\=` ending the pattern; `re:` makes it a
 * RegExp. Each rule is checked here as the middleware will check it, so that a bad one is a usage error
 * naming the flag and the rule, not the middleware's `cacheRules[i]`.
 */
export function cacheRulesFlag(values: FlagValues): CacheRule[] | undefined {
  const raw = stringFlag(values, 'cache-rule');
  if (raw === undefined) return undefined;
  return raw
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => {
      const bad = (why: string) => new UsageError(`--cache-rule ${line}: ${why}`);
      const eq = patternEnd(line);
      if (eq === -1) throw bad("must be PATTERN=VALUE, like '*.html=no-cache'");
      const pattern = line.slice(0, eq).trim();
      const cacheControl = line.slice(eq + 1).trim();
      if (pattern === '') throw bad("the pattern is empty: must be PATTERN=VALUE, like '*.html=no-cache'");
      if (cacheControl === '') throw bad("the value is empty: must be PATTERN=VALUE, like '*.html=no-cache'");
      let rule: CacheRule;
      if (!pattern.startsWith('re:')) rule = { match: pattern, cacheControl };
      else {
        // an empty RegExp matches every path: a rule for every file is `**`
        if (pattern === 're:')
          throw bad("the RegExp after re: is empty and would match every file (write '**=VALUE' for that)");
        try {
          rule = { match: new RegExp(pattern.slice(3)), cacheControl };
        } catch (err) {
          throw bad((err as Error).message);
        }
      }
      try {
        resolveCacheRules([rule]);
      } catch (err) {
        const message = (err as Error).message
          .replace(/^cacheRules\[0\]\.cacheControl/, 'the value')
          .replace(/^cacheRules pattern/, 'the pattern');
        throw bad(message);
      }
      return rule;
    });
}

const ETAG_MODES: Record<string, StaticOptions['etag']> = { content: true, weak: 'weak', off: false };

const WATCH_MODES: readonly WatchMode[] = ['auto', 'native', 'poll'];

function etagFlag(values: FlagValues): StaticOptions['etag'] {
  const raw = stringFlag(values, 'etag');
  if (raw === undefined) return undefined;
  if (!Object.hasOwn(ETAG_MODES, raw)) throw new UsageError(`--etag ${raw}: must be content, weak or off`);
  return ETAG_MODES[raw];
}

/** A pin source's name, `off` for none. */
function pinFlag(values: FlagValues, name: string): string | false | undefined {
  const raw = stringFlag(values, name);
  return raw === 'off' ? false : raw;
}

/** `--asset-fallback`: hashed, off, or re:REGEXP. */
function assetFallbackFlag(values: FlagValues): StaticOptions['assetFallback'] {
  const raw = stringFlag(values, 'asset-fallback');
  if (raw === undefined || raw === 'hashed') return raw;
  if (raw === 'off') return false;
  if (!raw.startsWith('re:')) throw new UsageError(`--asset-fallback ${raw}: must be hashed, off or re:REGEXP`);
  try {
    return new RegExp(raw.slice(3));
  } catch (err) {
    throw new UsageError(`--asset-fallback ${raw}: ${(err as Error).message}`);
  }
}

/** The flag behind each middleware option these flags set: its refusal is that flag's usage error. */
const FLAG_OF_OPTION: Readonly<Record<string, string>> = {
  serverId: 'server-id',
  watch: 'watch',
  pollInterval: 'poll-interval',
  heartbeatInterval: 'heartbeat-interval',
  maxAge: 'max-age',
  cacheRules: 'cache-rule',
  precompressed: 'precompressed',
  etag: 'etag',
  releaseHeader: 'release-header',
  pinQuery: 'pin-query',
  pinHeader: 'pin-header',
  pinCookie: 'pin-cookie',
  assetFallback: 'asset-fallback',
};

/**
 * Check the options as the middleware will, before anything starts (`up` starts its agent first):
 * a refusal is a usage error naming the flag and its value, not the middleware's option name.
 */
function checkedStaticOptions(options: StaticOptions, values: FlagValues): StaticOptions {
  try {
    resolveStaticOptions(options);
  } catch (err) {
    if (!(err instanceof TypeError)) throw err;
    const option = /^(\w+)/.exec(err.message)?.[1] ?? '';
    const flag = FLAG_OF_OPTION[option];
    if (flag === undefined) throw new UsageError(err.message);
    const given = values[flag];
    throw new UsageError(`--${flag} ${typeof given === 'string' ? given : String(given)}: ${err.message}`);
  }
  return options;
}

/** mirrorStatic's options from the flags; what a flag leaves unset takes the middleware's default. */
export function staticOptions(values: FlagValues, layout: StoreLayout, logger: Logger): StaticOptions {
  const watch = stringFlag(values, 'watch');
  if (watch !== undefined && !WATCH_MODES.includes(watch as WatchMode)) {
    throw new UsageError(`--watch ${watch}: must be auto, native or poll`);
  }
  return checkedStaticOptions(
    {
      store: layout.root,
      watch: watch as WatchMode | undefined,
      pollInterval: durationFlag(values, 'poll-interval', { min: MOUNT_MINIMUMS.pollInterval }),
      heartbeatInterval: durationFlag(values, 'heartbeat-interval', { min: MOUNT_MINIMUMS.heartbeatInterval }),
      maxAge: durationFlag(values, 'max-age'),
      cacheRules: cacheRulesFlag(values),
      precompressed: values.precompressed === undefined ? undefined : values.precompressed === true,
      etag: etagFlag(values),
      releaseHeader: stringFlag(values, 'release-header'),
      pinQuery: pinFlag(values, 'pin-query'),
      pinHeader: pinFlag(values, 'pin-header'),
      pinCookie: pinFlag(values, 'pin-cookie'),
      assetFallback: assetFallbackFlag(values),
      logger,
      serverId: stringFlag(values, 'server-id'),
    },
    values,
  );
}
