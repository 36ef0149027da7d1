import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

/**
 * The package's public face, imported by its own name as an application does
 * (package.json "exports"): the layout of the files behind it may change, the
 * names an application imports may not.
 */
const PUBLIC = [
  'DEFAULT_STORE',
  'EPOCH_FORMAT',
  'MOUNT_DEFAULTS',
  'MirrorswapError',
  'PROXY_DEFAULTS',
  'STATIC_DEFAULTS',
  'metricsHandler',
  'mirrorProxy',
  'mirrorStatic',
  'parseEpochRecord',
  'readEpochFile',
  'readHeartbeats',
  'storeLayout',
];

describe('the public exports', () => {
  it('are exactly the documented names, each defined', async () => {
    // by name, through package.json "exports" (a variable, so the compiler does not need dist/ first)
    const name = 'mirrorswap';
    const pkg = (await import(name)) as Record<string, unknown>;
    assert.deepEqual(Object.keys(pkg).sort(), [...PUBLIC].sort());
    for (const name of PUBLIC) assert.notEqual(pkg[name], undefined, name);
    assert.equal(typeof pkg.mirrorStatic, 'function');
    assert.equal(typeof pkg.mirrorProxy, 'function');
  });
});
