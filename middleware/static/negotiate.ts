import { VARIANT_ENCODINGS } from '../../src/store/content-index.js';

/**
 * Proactive negotiation of a content coding (RFC 9110 12.5.3) among the
 * variants a file has, from a request's `Accept-Encoding`.
 *
 * - No header: identity (any coding is acceptable, but a client that says
 *   nothing, such as curl, is sent the file as it is, as nginx does).
 * - Codings are compared case-insensitively; `x-gzip` is `gzip`; a coding
 *   this server has no variant for (`deflate`, `zstd`, made-up ones) is
 *   ignored; `*` weighs every coding not listed, identity included.
 * - A member's weight is its `q` (0 to 1, at most three decimals); a member
 *   whose `q` is malformed is ignored as a whole. A coding listed twice takes
 *   its highest weight (as the `negotiator` package does).
 * - The variant of highest weight above 0 is chosen, ties going to the
 *   server's order (`VARIANT_ENCODINGS`: br, then gzip); identity is chosen
 *   when its own weight (explicit, or from `*`) is higher than every
 *   variant's, or when no variant is acceptable.
 * - When identity is refused (`identity;q=0`, or `*;q=0` with no identity
 *   member) and no variant fits, the file is sent as it is all the same:
 *   RFC 9110 12.1 lets a server disregard the header rather than answer 406,
 *   and nginx's gzip_static, the `compression` middleware and
 *   express-static-gzip all do so; a file without variants answers the same.
 *
 * Hostile headers cost bounded work: only the first `MAX_HEADER_CHARS`
 * characters (less a member they cut short) and `MAX_MEMBERS` members are
 * read, and nothing here throws.
 */

/** How much of a header is read: far more than any browser sends (about 30 characters). */
export const MAX_HEADER_CHARS = 4096;
/** How many comma-separated members are read. */
export const MAX_MEMBERS = 64;

/** A file's variants as a bit set: bit i is set when it has VARIANT_ENCODINGS[i]. */
export type VariantMask = number;

/** What to send: an index into VARIANT_ENCODINGS, or -1 for the file as it is. */
export type Choice = number;

const IDENTITY: Choice = -1;
const MASKS = 1 << VARIANT_ENCODINGS.length;

/** Weights read from one header: -1 where a coding is not listed. */
interface Weights {
  readonly codings: number[];
  identity: number;
  star: number;
}

const QVALUE = /^(?:0(?:\.\d{0,3})?|1(?:\.0{0,3})?)$/;

/** The `q` of a member's parameters ('' for none): 1 when absent, NaN when malformed. */
function weightOf(params: string): number {
  let q = 1;
  for (const param of params.split(';')) {
    const eq = param.indexOf('=');
    if (eq === -1) {
      if (param.trim() === '') continue;
      return Number.NaN;
    }
    if (param.slice(0, eq).trim().toLowerCase() !== 'q') continue; // other parameters are ignored
    const value = param.slice(eq + 1).trim();
    if (!QVALUE.test(value)) return Number.NaN;
    q = Number(value);
  }
  return q;
}

/**
 * The part of a header that is read: its first MAX_HEADER_CHARS characters,
 * less a last member they cut short. What was cut may have been its weight
 * (`br;q=0` read as `br` would send a coding the client refused); only a
 * comma right after the cut says the member ended there.
 */
function readablePart(header: string): string {
  if (header.length <= MAX_HEADER_CHARS || header[MAX_HEADER_CHARS] === ',') return header.slice(0, MAX_HEADER_CHARS);
  return header.slice(0, header.lastIndexOf(',', MAX_HEADER_CHARS - 1) + 1);
}

function parse(header: string): Weights {
  const weights: Weights = { codings: VARIANT_ENCODINGS.map(() => -1), identity: -1, star: -1 };
  const text = readablePart(header);
  let start = 0;
  for (let members = 0; start <= text.length && members < MAX_MEMBERS; members++) {
    let end = text.indexOf(',', start);
    if (end === -1) end = text.length;
    const member = text.slice(start, end);
    start = end + 1;
    const semi = member.indexOf(';');
    const name = (semi === -1 ? member : member.slice(0, semi)).trim().toLowerCase();
    if (name === '') continue;
    const q = weightOf(semi === -1 ? '' : member.slice(semi + 1));
    if (Number.isNaN(q)) continue;
    if (name === '*') weights.star = Math.max(weights.star, q);
    else if (name === 'identity') weights.identity = Math.max(weights.identity, q);
    else {
      const i = (VARIANT_ENCODINGS as readonly string[]).indexOf(name === 'x-gzip' ? 'gzip' : name);
      if (i !== -1) weights.codings[i] = Math.max(weights.codings[i] as number, q);
    }
  }
  return weights;
}

/** The choice for each mask, from one header's weights. */
function choices(weights: Weights): Choice[] {
  const out: Choice[] = [];
  for (let mask = 0; mask < MASKS; mask++) {
    let best: Choice = IDENTITY;
    let bestQ = 0;
    VARIANT_ENCODINGS.forEach((_, i) => {
      if ((mask & (1 << i)) === 0) return;
      const listed = weights.codings[i] as number;
      const q = listed !== -1 ? listed : weights.star;
      if (q > bestQ) {
        best = i;
        bestQ = q;
      }
    });
    // identity beats the variants only by weighing more, explicitly or through "*"
    const identityQ = weights.identity !== -1 ? weights.identity : weights.star;
    if (best !== IDENTITY && identityQ > bestQ) best = IDENTITY;
    out.push(best);
  }
  return out;
}

/** Choices for headers seen before: browsers send a handful of distinct values. */
const memo = new Map<string, Choice[]>();
const MEMO_MAX_ENTRIES = 256;
const MEMO_MAX_CHARS = 256;

/** Which of a file's variants (`mask`) to send for this `Accept-Encoding`; -1 for the file as it is. */
export function chooseEncoding(header: string | string[] | undefined, mask: VariantMask): Choice {
  if (header === undefined || mask === 0) return IDENTITY;
  const value = typeof header === 'string' ? header : header.join(',');
  let table = memo.get(value);
  if (table === undefined) {
    table = choices(parse(value));
    if (value.length <= MEMO_MAX_CHARS) {
      if (memo.size >= MEMO_MAX_ENTRIES) memo.clear();
      memo.set(value, table);
    }
  }
  return table[mask] as Choice;
}
