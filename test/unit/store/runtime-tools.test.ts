import assert from 'node:assert/strict';
import { chmod, mkdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { FLOCK, SYNC, checkRuntimeTools } from '../../../src/store/runtime-tools.js';
import { runCli } from '../../../testkit/proc.js';
import { tempDirs, tempStore } from '../../../testkit/store.js';

const dirs = tempDirs();
after(() => dirs.removeAll());

describe('runtime tools', () => {
  it('are found on PATH', async () => {
    await checkRuntimeTools([FLOCK, SYNC]);
  });

  it('missing ones are named, with their package, before anything starts', async () => {
    const bin = await dirs.make('mirrorswap-bin-');
    await writeFile(join(bin, 'flock'), '#!/bin/sh\n');
    await chmod(join(bin, 'flock'), 0o755);
    await assert.rejects(checkRuntimeTools([FLOCK, SYNC], bin), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'MISSING_TOOL');
      assert.match(err.message, /sync is not on PATH/);
      assert.match(err.message, /coreutils/);
      assert.doesNotMatch(err.message, /flock is not/);
      return true;
    });
    // a file that is not executable is not the tool
    await writeFile(join(bin, 'sync'), '');
    await assert.rejects(checkRuntimeTools([SYNC], bin), /sync is not on PATH/);
    // nor is a directory by that name, whose x bit means search, not run
    const other = await dirs.make('mirrorswap-bin-');
    await mkdir(join(other, 'sync'));
    await assert.rejects(checkRuntimeTools([SYNC], other), /sync is not on PATH/);
  });

  it('the agent started without them exits at once with the error, taking nothing', async () => {
    const store = await tempStore('mirrorswap-tools-');
    after(() => store.dispose());
    const tokenFile = join(store.root, 'token');
    await writeFile(tokenFile, 'a-token-of-sixteen-chars', { mode: 0o600 });
    const proc = runCli(['agent', '--store', store.root, '--token-file', tokenFile, '--listen', '127.0.0.1:0'], {
      PATH: '/nonexistent',
    });
    const code = await proc.exited();
    assert.equal(code, 1, proc.output());
    assert.match(proc.output(), /flock is not on PATH.*util-linux.*sync is not on PATH.*coreutils/s);
    const init = runCli(['init', '--store', store.root], { PATH: '/nonexistent' });
    assert.equal(await init.exited(), 1);
    assert.match(init.output(), /MISSING_TOOL|is not on PATH/);
    await assert.rejects(stat(store.lockFile), { code: 'ENOENT' }, 'the store was taken');
  });

  it('up started without them exits at once with the error, before it seeds master or writes a token', async () => {
    const root = join(await dirs.make('mirrorswap-tools-up-'), 'store');
    const up = runCli(['up', '--store', root, '--listen', '127.0.0.1:0', '--serve-listen', '127.0.0.1:0'], {
      PATH: '/nonexistent',
    });
    assert.equal(await up.exited(), 1, up.output());
    assert.match(up.output(), /flock is not on PATH/);
    await assert.rejects(stat(root), { code: 'ENOENT' }, 'up made its store before it refused to start');
  });
});
