import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { cli } from '../../testkit/proc.js';

// Each case starts the CLI as a process: the full tier's, where tests of whole processes live.
describe('mirrorswap nginx flags', () => {
  it('refuses a missing --include, or one whose directory cannot be written, naming the fix', async () => {
    // the processes run at once: each is a second of a loaded machine's wall time, one after the other
    const [none, badDir, badWatch] = await Promise.all([
      cli(['nginx', '--store', '/nonexistent-store']),
      cli(['nginx', '--include', '/nonexistent-dir/mirrorswap/root.conf']),
      cli(['nginx', '--include', '/tmp/root.conf', '--watch', 'sometimes']),
    ]);
    assert.equal(none.code, 2);
    assert.match(none.output, /--include FILE is required/);
    assert.equal(badDir.code, 2);
    assert.match(badDir.output, /\/nonexistent-dir\/mirrorswap does not exist or is not writable: create it/);
    assert.equal(badWatch.code, 2);
    assert.match(badWatch.output, /--watch sometimes: must be auto, native or poll/);
  });
});
