import { PINNED_PRIVATELY } from '../../middleware/mount/release-pins.js';
import { writeFileAtomic } from '../store/atomic-write.js';
import type { SlotName } from '../store/store-layout.js';
import { RESERVED_ROOT_NAMES } from '../store/store-layout.js';

/**
 * The nginx include the companion owns: placed inside a `server { }` block,
 * it sets the document root to the mounted copy. Rewritten whole, by
 * rename, on each epoch; nginx reads it only when it (re)loads its
 * configuration, so a worker serves one copy from start to end.
 */
export function renderInclude(
  epoch: number,
  slot: SlotName,
  root: string,
  retained: readonly IncludedRelease[] = [],
  pins: ReleasePinNames = NGINX_PIN_NAMES,
): string {
  for (const [s, r] of [[slot, root] as const, ...retained.map((x) => [x.slot, x.root] as const)]) {
    if (/[;{}"'\\\s$]/.test(r)) {
      // a root nginx would read as more than one token (or as a variable) is refused, not quoted
      throw new Error(`slot ${s}'s root "${r}" holds a character nginx would misread: move the store`);
    }
  }
  return [
    `# Written by mirrorswap nginx: epoch ${epoch} mounts slot ${slot}. Do not edit: it is rewritten on every swap.`,
    ...(retained.length === 0 ? [`root ${root};`] : pinnedRoot(root, retained, pins)),
    `set $mirrorswap_epoch ${epoch};`,
    `set $mirrorswap_slot ${slot};`,
    // the copier's temp directory and the agent's content index are never served, whatever the rest says
    ...RESERVED_ROOT_NAMES.map((name) => `location ^~ /${name}/ { return 404; }`),
    // the precompressed siblings the agent made at sync (app.js.gz), sent to clients that accept gzip,
    // with Vary: Accept-Encoding; brotli_static needs a module nginx may not have: see the README
    'gzip_static on;',
    'gzip_vary on;',
    '',
  ].join('\n');
}

/** A release the store retains, as the include names it: its copy's root, and what a pin may call it. */
export interface IncludedRelease {
  readonly slot: SlotName;
  readonly root: string;
  /** Its release id and the epoch that published it. */
  readonly names: readonly string[];
}

/** Where a request names its release: the middleware's defaults (`?dpl=`, `x-deployment-id`, the `__dpl` cookie). */
export interface ReleasePinNames {
  readonly query: string;
  readonly header: string;
  readonly cookie: string;
}

export const NGINX_PIN_NAMES: ReleasePinNames = Object.freeze({
  query: 'dpl',
  header: 'x-deployment-id',
  cookie: '__dpl',
});

/**
 * Skew protection in nginx's own terms: `$mirrorswap_root` is the mounted
 * copy's root unless the request names a retained release, by the query
 * parameter, the header or the cookie (the cookie never on a navigation),
 * the query winning over the header, the header over the cookie. `if` with
 * `set` only, at server level: the one use of `if` nginx keeps safe. A name
 * is matched whole against the release ids and epochs the include lists, so
 * a request can only ever choose among the retained copies.
 *
 * An answer a header or a cookie sent to a retained copy gets
 * `Cache-Control: private, no-cache`, as the middleware's does: the URL
 * does not say which release it is, and a shared cache keyed by it would
 * keep the old release's bytes (its `gzip_static` variant included), or
 * its 404, for every request that names nothing (`always`: whatever the
 * status). `add_header` with an empty value adds nothing: every other
 * answer is as nginx sends it.
 */
function pinnedRoot(root: string, retained: readonly IncludedRelease[], pins: ReleasePinNames): string[] {
  const variable = (prefix: string, name: string) => `$${prefix}${name.toLowerCase().replace(/-/g, '_')}`;
  const privately = `set $mirrorswap_pin_private "${PINNED_PRIVATELY}";`;
  const lines = [
    `set $mirrorswap_root ${root};`,
    'set $mirrorswap_pin "";',
    // how the pin was named: outside the URL (header, cookie), or by the query
    'set $mirrorswap_pin_private "";',
    'set $mirrorswap_cache_control "";',
    `if ($http_sec_fetch_mode != "navigate") { set $mirrorswap_pin ${variable('cookie_', pins.cookie)}; ${privately} }`,
    `if (${variable('http_', pins.header)}) { set $mirrorswap_pin ${variable('http_', pins.header)}; ${privately} }`,
    `if (${variable('arg_', pins.query)}) { set $mirrorswap_pin ${variable('arg_', pins.query)}; set $mirrorswap_pin_private ""; }`,
  ];
  for (const r of retained) {
    // release ids and epochs are made of characters nginx reads as one token (RELEASE_ID_PATTERN);
    // nginx compares a pin as sent, so an id's percent-encoded form (`:`, `+`, `@`) is listed too
    const names = new Set(r.names.flatMap((name) => [name, encodeURIComponent(name)]));
    for (const name of names) {
      lines.push(
        `if ($mirrorswap_pin = "${name}") { set $mirrorswap_root ${r.root}; set $mirrorswap_cache_control $mirrorswap_pin_private; }`,
      );
    }
  }
  // always: a 404 (or any error) of the retained release is no answer for others either, and mirrorStatic
  // marks the answer before it looks the file up
  lines.push('root $mirrorswap_root;', 'add_header Cache-Control $mirrorswap_cache_control always;');
  return lines;
}

/** Write the include atomically (temp file, fsync, rename, fsync of the directory). */
export async function writeInclude(
  file: string,
  epoch: number,
  slot: SlotName,
  root: string,
  retained: readonly IncludedRelease[] = [],
): Promise<void> {
  await writeFileAtomic(file, renderInclude(epoch, slot, root, retained), { durable: true, mode: 0o644 });
}
