import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { cacheControlFor, globMatcher, resolveCacheRules } from '../../../middleware/static/cache-rules.js';
import { MAX_HEADER_CHARS, chooseEncoding } from '../../../middleware/static/negotiate.js';

const BR = 1;
const GZIP = 2;
const BOTH = BR | GZIP;
const names = ['br', 'gzip'];
const choose = (header: string | undefined, mask = BOTH) => {
  const c = chooseEncoding(header, mask);
  return c === -1 ? 'identity' : names[c];
};

describe('Accept-Encoding negotiation (RFC 9110 12.5.3)', () => {
  it("RFC 9110's examples", () => {
    assert.equal(choose('compress, gzip'), 'gzip');
    assert.equal(choose(''), 'identity');
    assert.equal(choose('*'), 'br');
    assert.equal(choose('compress;q=0.5, gzip;q=1.0'), 'gzip');
    assert.equal(choose('gzip;q=1.0, identity; q=0.5, *;q=0'), 'gzip');
  });

  it('no header: the file as it is', () => {
    assert.equal(choose(undefined), 'identity');
  });

  it("what browsers send: br, the server's preference on equal weights", () => {
    assert.equal(choose('gzip, deflate, br, zstd'), 'br');
    assert.equal(choose('gzip, deflate, br'), 'br');
    assert.equal(choose('gzip, deflate'), 'gzip');
    assert.equal(choose('gzip, deflate, br', GZIP), 'gzip');
    assert.equal(choose('br', GZIP), 'identity');
    assert.equal(choose('gzip, br', 0), 'identity');
  });

  it('q-values pick, q=0 refuses', () => {
    assert.equal(choose('br;q=0.5, gzip;q=0.8'), 'gzip');
    assert.equal(choose('br;q=0, gzip'), 'gzip');
    assert.equal(choose('br;q=0, gzip;q=0'), 'identity');
    assert.equal(choose('br;q=0.001'), 'br');
    assert.equal(choose('gzip;q=1.000, br;q=0.999'), 'gzip');
  });

  it('"*" weighs what is not listed, identity included', () => {
    assert.equal(choose('*;q=0.5, br;q=0'), 'gzip');
    assert.equal(choose('*;q=0'), 'identity');
    assert.equal(choose('gzip;q=0.4, *;q=0.6'), 'br');
    assert.equal(choose('*;q=0.5, identity'), 'identity');
  });

  it('identity wins only by weighing more; refused identity still gets the file when nothing fits', () => {
    assert.equal(choose('identity, br'), 'br');
    assert.equal(choose('identity;q=1, br;q=0.5'), 'identity');
    assert.equal(choose('identity;q=0, br'), 'br');
    // nothing acceptable: sent as it is, as nginx, compression and express-static-gzip do
    assert.equal(choose('identity;q=0', BOTH), 'identity');
    assert.equal(choose('identity;q=0, deflate'), 'identity');
    assert.equal(choose('*;q=0', BOTH), 'identity');
  });

  it('codings and parameter names are case-insensitive; x-gzip is gzip; whitespace anywhere', () => {
    assert.equal(choose('GZIP'), 'gzip');
    assert.equal(choose('Br'), 'br');
    assert.equal(choose('x-gzip'), 'gzip');
    assert.equal(choose('  br ; Q = 0 ,\tgzip  '), 'gzip');
    assert.equal(choose('br;Q=0.1, gzip;q=0.2'), 'gzip');
  });

  it('unknown codings and parameters are ignored; a coding listed twice takes its highest weight', () => {
    assert.equal(choose('zstd, deflate, compress'), 'identity');
    assert.equal(choose('made-up;q=1, gzip;q=0.1'), 'gzip');
    assert.equal(choose('br;level=3;q=0.5, gzip;q=0.4'), 'br');
    assert.equal(choose('br;q=0, br;q=0.5, gzip;q=0.4'), 'br');
  });

  it('a member with a malformed q is ignored as a whole', () => {
    assert.equal(choose('br;q=abc, gzip;q=0.1'), 'gzip');
    assert.equal(choose('br;q=2, gzip;q=0.1'), 'gzip');
    assert.equal(choose('br;q=0.1234, gzip;q=0.1'), 'gzip');
    assert.equal(choose('br;q=-1'), 'identity');
    assert.equal(choose('br;q'), 'identity');
    assert.equal(choose('br;;;'), 'br');
    assert.equal(choose(',,,;;;===,,'), 'identity');
    assert.equal(choose('identity;q=x'), 'identity');
  });

  it('several header lines are read as one list', () => {
    assert.equal(chooseEncoding(['br;q=0', 'gzip'], BOTH), 1);
  });

  it('hostile headers: bounded work, never a throw', () => {
    const huge = `${'x'.repeat(100 * 1024)}, br`;
    const tokens = `${'deflate, '.repeat(5000)}br`;
    const t0 = performance.now();
    for (let i = 0; i < 100; i++) {
      // beyond what is read: br is not seen
      assert.equal(choose(huge + String(i)), 'identity');
      assert.equal(choose(tokens + String(i)), 'identity');
      assert.equal(choose(`br;q=${'9'.repeat(50_000)}${i}`), 'identity');
    }
    const perHeader = (performance.now() - t0) / 300;
    assert.ok(perHeader < 2, `${perHeader.toFixed(3)} ms a header`);
    assert.equal(choose('\u0000\uffff\ud800, br'), 'br');
  });

  it('a member cut by the length limit is not read as another: br;q=0 cut after "br" is no br', () => {
    // the first MAX_HEADER_CHARS characters are read; a member they cut short is not the client's
    const upTo = (tail: string, at: number) => `${'x'.repeat(MAX_HEADER_CHARS - at - 2)}, ${tail}`;
    assert.equal(choose(upTo('br;q=0', 2)), 'identity', 'br;q=0 cut to br');
    assert.equal(choose(upTo('gzip;q=0', 4)), 'identity', 'gzip;q=0 cut to gzip');
    assert.equal(choose(`gzip;q=0.8, ${upTo('br;q=0.5', 2).slice(12)}`), 'gzip', 'br;q=0.5 cut to br');
    assert.equal(choose(`gzip;q=0.95, ${upTo('identity;q=0.9', 8).slice(13)}`), 'gzip', 'identity;q=0.9 cut');
    // a cut that falls on a member's end leaves it whole
    assert.equal(choose(upTo('br', 2)), 'br');
    assert.equal(choose(`${upTo('br', 2)}, gzip`), 'br');
  });
});

describe('cache rules', () => {
  const matches = (glob: string, path: string) => globMatcher(glob)(path);

  it('a glob without a slash matches the name in any directory', () => {
    assert.ok(matches('*.html', '/index.html'));
    assert.ok(matches('*.html', '/a/b/page.html'));
    assert.ok(!matches('*.html', '/page.html.br'));
    assert.ok(!matches('*.html', '/a.html/x.js'));
    assert.ok(matches('*.{js,css}', '/a/app.css'));
    assert.ok(matches('app.[0-9a-f][0-9a-f]*.js', '/static/app.3f9.js'));
    assert.ok(!matches('app.[!0-9]*.js', '/static/app.3f9.js'));
    assert.ok(matches('?.txt', '/a.txt'));
    assert.ok(!matches('?.txt', '/ab.txt'));
    assert.ok(matches('a\\*b', '/a*b'));
    assert.ok(!matches('a\\*b', '/axb'));
  });

  it('a glob with a slash matches the whole path; ** spans directories', () => {
    assert.ok(matches('/assets/**', '/assets/x/y.js'));
    assert.ok(matches('assets/**', '/assets/y.js'));
    assert.ok(!matches('assets/**', '/other/assets/y.js'));
    assert.ok(matches('**/*.js', '/a.js'));
    assert.ok(matches('**/*.js', '/a/b/c.js'));
    assert.ok(matches('/a/*/c.js', '/a/b/c.js'));
    assert.ok(!matches('/a/*/c.js', '/a/b/b/c.js'));
    assert.ok(!matches('/a/*.js', '/a/b/c.js'));
    // RegExp specials in a glob are literal
    assert.ok(matches('/a+b(1).js', '/a+b(1).js'));
    assert.ok(!matches('/a.js', '/axjs'));
  });

  it('a glob is matched without backtracking: a file name chosen by a writer cannot stall the server', () => {
    // The names of master's files are the writers', not the operator's. A glob of a few stars compiled
    // to a RegExp backtracked polynomially on a long name of its separators: 1 s for four stars and a
    // 250-byte name (a name may be 255), minutes for six, each lookup blocking the event loop.
    const name = `/${'-'.repeat(250)}`;
    for (const glob of ['*-*-*-*.js', '*-*-*-*-*-*.js', '**/*-*-*-*-*.css', '/**/*-*-*-*-*-*-*-*']) {
      const rules = resolveCacheRules([{ match: glob, cacheControl: 'x' }]);
      const started = performance.now();
      const got = cacheControlFor(rules, name);
      const took = performance.now() - started;
      assert.equal(got, glob === '/**/*-*-*-*-*-*-*-*' ? 'x' : undefined, glob);
      assert.ok(took < 50, `${glob}: ${took.toFixed(1)} ms`);
    }
    // and still matches what it should, by code point
    assert.ok(matches('*-*-*-*.js', '/a-b-c-d.js'));
    assert.ok(matches('*-*-*-*.js', '/x/--------.js'));
    assert.ok(!matches('*-*-*-*.js', '/a-b-c.js'));
    assert.ok(matches('?.txt', '/\u{1f600}.txt'));
    assert.ok(matches('[\u{1f600}a].txt', '/\u{1f600}.txt'));
  });

  it('first match wins; RegExps are tested on the path; bad rules are TypeErrors', () => {
    const rules = resolveCacheRules([
      { match: /\.[0-9a-f]{8}\.(?:js|css)$/, cacheControl: 'public, max-age=31536000, immutable' },
      { match: '*.html', cacheControl: 'no-cache' },
      { match: '**', cacheControl: 'public, max-age=60' },
    ]);
    assert.equal(cacheControlFor(rules, '/app.0123abcd.js'), 'public, max-age=31536000, immutable');
    assert.equal(cacheControlFor(rules, '/x/index.html'), 'no-cache');
    assert.equal(cacheControlFor(rules, '/x/app.js'), 'public, max-age=60');
    assert.equal(cacheControlFor(resolveCacheRules([]), '/x'), undefined);
    // a global RegExp gives the same answer every time
    const g = resolveCacheRules([{ match: /a/g, cacheControl: 'x' }]);
    assert.equal(cacheControlFor(g, '/a'), 'x');
    assert.equal(cacheControlFor(g, '/a'), 'x');
    for (const bad of [
      'x',
      [{ match: 1, cacheControl: 'x' }],
      [{ match: '*.js' }],
      [{ match: '*.js', cacheControl: 'a\r\nb' }],
      [{ match: '*.js', cacheControl: ' ' }],
      [{ match: '', cacheControl: 'x' }],
      [{ match: '[abc', cacheControl: 'x' }],
      [{ match: '{a,b', cacheControl: 'x' }],
      // a glob ending in a slash names a directory, and rules match files: it would match nothing
      [{ match: '/assets/', cacheControl: 'x' }],
      [{ match: 'assets/', cacheControl: 'x' }],
      [null],
    ]) {
      assert.throws(() => resolveCacheRules(bad), TypeError, JSON.stringify(bad));
    }
  });
});
