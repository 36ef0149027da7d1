import assert from 'node:assert/strict';
import type { IncomingMessage } from 'node:http';
import { describe, it } from 'node:test';
import { resolveStaticOptions } from '../../../middleware/options.js';
import { HASHED_ASSET, pinOf } from '../../../middleware/mount/release-pins.js';

const sources = { query: 'dpl', header: 'x-deployment-id', cookie: '__dpl' } as const;
const req = (url: string, headers: Record<string, string> = {}) => ({ url, headers }) as unknown as IncomingMessage;

describe('release pins (skew protection)', () => {
  it('takes the release from the query, the header or the cookie, in that order, and says which', () => {
    assert.deepEqual(pinOf(req('/a.js?dpl=v1'), sources), { name: 'v1', via: 'query' });
    assert.equal(pinOf(req('/a.js?x=1&dpl=dpl_8f2c&y'), sources)?.name, 'dpl_8f2c');
    assert.deepEqual(pinOf(req('/a.js', { 'x-deployment-id': ' 42 ' }), sources), { name: '42', via: 'header' });
    assert.deepEqual(pinOf(req('/a.js', { cookie: 'a=b; __dpl="v3"; c=d' }), sources), { name: 'v3', via: 'cookie' });
    assert.equal(pinOf(req('/a.js?dpl=q', { 'x-deployment-id': 'h', cookie: '__dpl=c' }), sources)?.name, 'q');
    assert.equal(pinOf(req('/a.js', { 'x-deployment-id': 'h', cookie: '__dpl=c' }), sources)?.name, 'h');
    // percent-encoded or not, and a + is a + (release ids hold no space), as nginx's $arg_ reads it
    assert.equal(pinOf(req('/a.js?dpl=v%2B1'), sources)?.name, 'v+1');
    assert.equal(pinOf(req('/a.js?dpl=v1+build.5'), sources)?.name, 'v1+build.5');
  });

  it('names nothing for what cannot be a release id: hostile, huge or malformed values', () => {
    for (const url of [
      '/a.js?dpl=',
      '/a.js?dpl=%ZZ',
      '/a.js?dpl=a%00b',
      '/a.js?dpl=../../etc',
      '/a.js?dpl=a%20b',
      `/a.js?dpl=${'x'.repeat(129)}`,
      '/a.js?dpl',
      '/a.js?xdpl=v1',
    ]) {
      assert.equal(pinOf(req(url), sources), null, url);
    }
    assert.equal(pinOf(req('/a.js', { cookie: '__dpl=<script>' }), sources), null);
    assert.equal(pinOf(req('/a.js', { cookie: `__dpl=${'v'.repeat(100_000)}` }), sources), null);
    assert.equal(pinOf(req('/a.js', { cookie: 'x__dpl=v1; __dplx=v2' }), sources), null);
  });

  it('a cookie never pins a navigation; the query and header still do', () => {
    const nav = { 'sec-fetch-mode': 'navigate' };
    assert.equal(pinOf(req('/', { ...nav, cookie: '__dpl=v1' }), sources), null);
    assert.equal(pinOf(req('/?dpl=v1', nav), sources)?.name, 'v1');
  });

  it('a source set to false is not looked at', () => {
    const none = { query: false, header: false, cookie: false } as const;
    assert.equal(pinOf(req('/a.js?dpl=v1', { 'x-deployment-id': 'v1', cookie: '__dpl=v1' }), none), null);
  });

  it('the default fallback pattern takes hashed asset names, not plain ones', () => {
    for (const path of [
      '/assets/app.3f9a1c2e.js',
      '/assets/index-B2xQ9_a1.css',
      '/static/chunk-4-a1b2c3d4.mjs',
      '/fonts/inter.8c1f0a2b.woff2',
      '/_next/static/chunks/pages/index.js',
    ]) {
      assert.ok(HASHED_ASSET.test(path), path);
    }
    for (const path of [
      '/index.html',
      '/js/main-navigation.js',
      '/app.js',
      '/assets/logo.3f9a1c2e.png',
      '/a.12345678.html',
    ]) {
      assert.ok(!HASHED_ASSET.test(path), path);
    }
  });

  it('options: names checked, "hashed" and false and a RegExp taken, anything else refused', () => {
    const base = { store: '/srv/store' };
    const o = resolveStaticOptions({ ...base, pinHeader: 'X-Release-Id', assetFallback: /\.js$/ });
    assert.equal(o.pins.header, 'x-release-id');
    assert.deepEqual(o.assetFallback, /\.js$/);
    assert.equal(resolveStaticOptions(base).assetFallback, HASHED_ASSET);
    assert.equal(resolveStaticOptions({ ...base, assetFallback: false }).assetFallback, false);
    assert.equal(resolveStaticOptions({ ...base, pinCookie: false }).pins.cookie, false);
    for (const bad of [
      { pinQuery: 'a b' },
      { pinHeader: 'bad header' },
      { pinCookie: '' },
      { assetFallback: '*.js' },
    ]) {
      assert.throws(() => resolveStaticOptions({ ...base, ...(bad as object) }), TypeError, JSON.stringify(bad));
    }
  });
});
