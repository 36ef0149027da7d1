/**
 * Cache rules: path patterns mapped to a Cache-Control value, the first
 * match winning. They are resolved once per cache entry (when a file is
 * looked up, once per epoch), never per request.
 *
 * A pattern is a RegExp, tested against the file's path in the copy with a
 * leading slash (`/assets/app.3f2a9c1e.js`), or a glob:
 *
 * - without a slash, it matches the file's name in any directory (`*.html`);
 * - with one, the whole path from the root (a leading slash is optional:
 *   `assets/**` and `/assets/**` are the same); one ending in a slash would
 *   name a directory, never a file, and is refused;
 * - `*` is any run of characters but `/`, `?` one such character, `**` as a
 *   whole segment any number of directories (`**` at the end: anything
 *   below), `[abc]`, `[a-z]` and `[!a-z]` (or `[^a-z]`) a character of a set,
 *   `{js,css}` one of the alternatives (not nested), `\\x` the character x.
 *
 * Dotfiles are matched like any other name; matching is case-sensitive, as
 * the paths of a copy are.
 */

export interface CacheRule {
  readonly match: string | RegExp;
  readonly cacheControl: string;
}

export interface ResolvedCacheRule {
  readonly test: (path: string) => boolean;
  readonly cacheControl: string;
}

function fail(message: string): never {
  throw new TypeError(message);
}

const SPECIAL = /[\\^$.*+?()[\]{}|/]/;

function escapeChar(c: string): string {
  return SPECIAL.test(c) ? `\\${c}` : c;
}

/** The source of a RegExp matching what `glob` (one alternative, no braces left) matches. */
function segmentSource(glob: string, pattern: string): string {
  let out = '';
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i] as string;
    if (c === '\\') {
      const next = glob[++i];
      if (next === undefined) fail(`cacheRules pattern "${pattern}" ends with a backslash`);
      out += escapeChar(next);
    } else if (c === '*') {
      out += '[^/]*';
    } else if (c === '?') {
      out += '[^/]';
    } else if (c === '[') {
      const close = glob.indexOf(']', i + 2);
      if (close === -1) fail(`cacheRules pattern "${pattern}" has an unclosed [ (write \\[ for a literal one)`);
      let set = glob.slice(i + 1, close);
      let negate = false;
      if (set.startsWith('!') || set.startsWith('^')) {
        negate = true;
        set = set.slice(1);
      }
      const body = set.replace(/[\\\]^]/g, (m) => `\\${m}`);
      out += negate ? `[^/${body}]` : `[${body}]`;
      i = close;
    } else {
      out += escapeChar(c);
    }
  }
  return out;
}

/** A glob's path segments, as RegExp source: `**` segments match any number of directories. */
function pathSource(glob: string, pattern: string): string {
  const segments = glob.split('/');
  let out = '';
  segments.forEach((segment, i) => {
    const last = i === segments.length - 1;
    if (segment === '**') out += last ? '.*' : '(?:[^/]+/)*';
    else out += segmentSource(segment, pattern) + (last ? '' : '/');
  });
  return out;
}

/** Expand `{a,b}` alternatives (not nested) into the globs they stand for. */
function expandBraces(glob: string, pattern: string): string[] {
  const open = glob.search(/(?<!\\)\{/);
  if (open === -1) return [glob];
  const close = glob.indexOf('}', open);
  if (close === -1) fail(`cacheRules pattern "${pattern}" has an unclosed { (write \\{ for a literal one)`);
  const inner = glob.slice(open + 1, close);
  if (inner.includes('{')) fail(`cacheRules pattern "${pattern}" nests braces`);
  const rest = expandBraces(glob.slice(close + 1), pattern);
  const out: string[] = [];
  for (const alt of inner.split(',')) for (const tail of rest) out.push(glob.slice(0, open) + alt + tail);
  if (out.length > 256) fail(`cacheRules pattern "${pattern}" expands to too many alternatives`);
  return out;
}

/** A RegExp for a glob, anchored on the whole path (or, for a glob without a slash, the last segment). */
export function globToRegExp(pattern: string): RegExp {
  if (pattern === '') fail('cacheRules pattern must not be empty');
  // rules match files, never a directory: a glob naming one would match nothing, silently
  if (pattern.endsWith('/')) {
    fail(
      `cacheRules pattern "${pattern}" ends with a slash and would match no file: write "${pattern}**" for every file below it`,
    );
  }
  const anywhere = !pattern.includes('/');
  const glob = pattern.startsWith('/') ? pattern.slice(1) : pattern;
  const alternatives = expandBraces(glob, pattern).map((g) => pathSource(g, pattern));
  const body = alternatives.length === 1 ? alternatives[0] : `(?:${alternatives.join('|')})`;
  return new RegExp(anywhere ? `(?:^|/)${body}$` : `^/${body}$`);
}

const CACHE_CONTROL = /^[\t\x20-\x7e]+$/;

/** Check and compile the `cacheRules` option. */
export function resolveCacheRules(value: unknown): readonly ResolvedCacheRule[] {
  if (value === undefined) return Object.freeze([]);
  if (!Array.isArray(value)) fail('cacheRules option must be an array of { match, cacheControl }');
  return Object.freeze(
    value.map((rule: unknown, i) => {
      const r = rule as CacheRule;
      if (typeof r !== 'object' || r === null) fail(`cacheRules[${i}] must be an object { match, cacheControl }`);
      if (typeof r.cacheControl !== 'string' || !CACHE_CONTROL.test(r.cacheControl) || r.cacheControl.trim() === '') {
        fail(`cacheRules[${i}].cacheControl must be a non-empty header value (visible ASCII)`);
      }
      let re: RegExp;
      if (r.match instanceof RegExp) {
        // a global or sticky RegExp keeps state between tests: use a copy without those flags
        re =
          r.match.global || r.match.sticky ? new RegExp(r.match.source, r.match.flags.replace(/[gy]/g, '')) : r.match;
      } else if (typeof r.match === 'string') re = globToRegExp(r.match);
      else fail(`cacheRules[${i}].match must be a glob string or a RegExp`);
      return Object.freeze({ test: (path: string) => re.test(path), cacheControl: r.cacheControl.trim() });
    }),
  );
}

/** The Cache-Control of the first rule matching `path` (with a leading slash); undefined when none does. */
export function cacheControlFor(rules: readonly ResolvedCacheRule[], path: string): string | undefined {
  for (const rule of rules) if (rule.test(path)) return rule.cacheControl;
  return undefined;
}
