import assert from 'node:assert/strict';
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { runCli } from '../../testkit/proc.js';
import { tempDirs } from '../../testkit/store.js';

const dirs = tempDirs();
after(() => dirs.removeAll());

/**
 * `up` seeds an empty store with sample content and writes the agent's
 * token. A bad agent flag is a usage error as a bad web flag is, and must
 * come before any of that: given afterwards, the store the operator named
 * (a directory meant to be filled) holds the sample site and a state
 * directory though `up` refused to start.
 */
describe('up: a bad agent flag refuses before the store is seeded', () => {
  for (const args of [
    ['--keep', '1'],
    ['--brotli-quality', '12'],
    ['--variant-types', ''],
  ]) {
    it(`up ${args.join(' ')}: exit 2 naming the flag, nothing made`, async () => {
      const root = join(await dirs.make('mirrorswap-up-flags-'), 'store');
      const up = runCli(['up', '--store', root, '--listen', '127.0.0.1:0', '--serve-listen', '127.0.0.1:0', ...args]);
      const code = await up.exited();
      assert.equal(code, 2, up.output());
      assert.match(up.output(), new RegExp(`^mirrorswap up: ${args[0]}`, 'm'), up.output());
      await assert.rejects(stat(root), { code: 'ENOENT' }, 'up made its store before it refused to start');
    });
  }
});
