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

/** One code point of a segment's glob: a character, `?`, a set, or `*`. */
type Token = string | { readonly one: (c: string) => boolean } | typeof STAR;
const STAR = Symbol('*');
const ANY_ONE = Object.freeze({ one: () => true });

/** A segment's glob (one alternative, no braces left) as tokens, by code point. */
function segmentTokens(glob: string, pattern: string): Token[] {
  const chars = Array.from(glob);
  const tokens: Token[] = [];
  for (let i = 0; i < chars.length; i++) {
    const c = chars[i] as string;
    if (c === '\\') {
      const next = chars[++i];
      if (next === undefined) fail(`cacheRules pattern "${pattern}" ends with a backslash`);
      tokens.push(next);
    } else if (c === '*') {
      if (tokens.at(-1) !== STAR) tokens.push(STAR); // ** inside a segment is *
    } else if (c === '?') {
      tokens.push(ANY_ONE);
    } else if (c === '[') {
      const close = chars.indexOf(']', i + 2);
      if (close === -1) fail(`cacheRules pattern "${pattern}" has an unclosed [ (write \\[ for a literal one)`);
      let set = chars.slice(i + 1, close).join('');
      let negate = false;
      if (set.startsWith('!') || set.startsWith('^')) {
        negate = true;
        set = set.slice(1);
      }
      const body = set.replace(/[\\\]^]/g, (m) => `\\${m}`);
      let re: RegExp;
      try {
        // a class of one code point: tested on one character, it cannot backtrack
        re = new RegExp(negate ? `^[^/${body}]$` : `^[${body}]$`, 'u');
      } catch (err) {
        fail(`cacheRules pattern "${pattern}" has a bad set [${set}]: ${(err as Error).message}`);
      }
      tokens.push({ one: (ch: string) => re.test(ch) });
      i = close;
    } else {
      tokens.push(c);
    }
  }
  return tokens;
}

/**
 * Whether `name` (its code points) is matched by `tokens`. Greedy, going
 * back only to the last star: every token but `*` takes one character, so
 * matching each star's following run at its first place is never wrong.
 * At most length(name) x length(tokens) steps, whatever the name: a
 * RegExp of the glob backtracked polynomially in the number of stars (a
 * name of 250 dashes against `*-*-*-*.js`: 1 s; six stars: minutes).
 */
function tokensMatch(tokens: readonly Token[], name: readonly string[]): boolean {
  let t = 0;
  let i = 0;
  let star = -1;
  let resume = 0;
  while (i < name.length) {
    const token = tokens[t];
    if (token === STAR) {
      star = t++;
      resume = i;
    } else if (token !== undefined && (typeof token === 'string' ? token === name[i] : token.one(name[i] as string))) {
      t++;
      i++;
    } else if (star !== -1) {
      t = star + 1;
      i = ++resume;
    } else return false;
  }
  while (tokens[t] === STAR) t++;
  return t === tokens.length;
}

/** A glob's path segments: `**` (as a whole segment) any number of directories, else a segment's tokens. */
type Segment = typeof GLOBSTAR | readonly Token[];
const GLOBSTAR = Symbol('**');

/**
 * Whether the path's segments from `si` on are matched by the glob's from
 * `pi` on. A `**` before the last segment is any number of directories
 * (none included), a last one anything below (at least one name). Each
 * (pi, si) pair is settled once: at most segments x segments steps.
 */
function segmentsMatch(glob: readonly Segment[], path: readonly (readonly string[])[]): boolean {
  const memo = new Map<number, boolean>();
  const at = (pi: number, si: number): boolean => {
    if (pi === glob.length) return si === path.length;
    const key = pi * (path.length + 1) + si;
    const known = memo.get(key);
    if (known !== undefined) return known;
    const segment = glob[pi] as Segment;
    let result: boolean;
    if (segment === GLOBSTAR) {
      if (pi === glob.length - 1) result = si < path.length;
      else {
        result = false;
        for (let k = si; k < path.length && !result; k++) result = at(pi + 1, k);
      }
    } else {
      result = si < path.length && tokensMatch(segment, path[si] as string[]) && at(pi + 1, si + 1);
    }
    memo.set(key, result);
    return result;
  };
  return at(0, 0);
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

/**
 * A test of a path (with a leading slash) for a glob: the whole path, or,
 * for a glob without a slash, its last segment. Matched by code point and
 * without backtracking (`tokensMatch`, `segmentsMatch`): the names tested
 * are master's, chosen by its writers.
 */
export function globMatcher(pattern: string): (path: string) => boolean {
  if (pattern === '') fail('cacheRules pattern must not be empty');
  // rules match files, never a directory: a glob naming one would match nothing, silently
  if (pattern.endsWith('/')) {
    fail(
      `cacheRules pattern "${pattern}" ends with a slash and would match no file: write "${pattern}**" for every file below it`,
    );
  }
  const anywhere = !pattern.includes('/');
  const glob = pattern.startsWith('/') ? pattern.slice(1) : pattern;
  const alternatives: Segment[][] = expandBraces(glob, pattern).map((g) =>
    g.split('/').map((segment) => (segment === '**' ? GLOBSTAR : segmentTokens(segment, pattern))),
  );
  return (path: string) => {
    const names = path.slice(1).split('/');
    if (anywhere) {
      const last = Array.from(names.at(-1) as string);
      // one segment each: `**` alone is any file
      return alternatives.some(([segment]) => segment === GLOBSTAR || tokensMatch(segment as Token[], last));
    }
    const segments = names.map((name) => Array.from(name));
    return alternatives.some((segs) => segmentsMatch(segs, segments));
  };
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
      let test: (path: string) => boolean;
      if (r.match instanceof RegExp) {
        // a global or sticky RegExp keeps state between tests: use a copy without those flags
        const re =
          r.match.global || r.match.sticky ? new RegExp(r.match.source, r.match.flags.replace(/[gy]/g, '')) : r.match;
        test = (path: string) => re.test(path);
      } else if (typeof r.match === 'string') test = globMatcher(r.match);
      else fail(`cacheRules[${i}].match must be a glob string or a RegExp`);
      return Object.freeze({ test, cacheControl: r.cacheControl.trim() });
    }),
  );
}

/** The Cache-Control of the first rule matching `path` (with a leading slash); undefined when none does. */
export function cacheControlFor(rules: readonly ResolvedCacheRule[], path: string): string | undefined {
  for (const rule of rules) if (rule.test(path)) return rule.cacheControl;
  return undefined;
}
