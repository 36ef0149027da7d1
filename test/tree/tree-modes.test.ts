import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { unlockTree } from '../../src/tree/tree-mode.js';
import { runUnprivileged } from '../../testkit/unprivileged.js';

// Each case runs as an unprivileged user (see runUnprivileged): as root, every
// permission check passes and a read-only directory wedges nothing.
const made: string[] = [];
const temp = async (prefix: string) => {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  made.push(dir);
  return dir;
};
after(async () => {
  // the trees hold read-only directories: an unprivileged run could not remove them as they are
  for (const dir of made) {
    await unlockTree(dir);
    await rm(dir, { recursive: true, force: true });
  }
});

describe('trees of any mode, copied by an unprivileged agent', () => {
  it('read-only directories at several depths go through init, journal and full syncs, mode changes, deletes; unreadable entries are reported and counted', async () => {
    await runUnprivileged('agent', await temp('mirrorswap-modes-agent-'));
  });

  it('a host slot with read-only directories takes later pulls under them, deltas and whole compares alike', async () => {
    await runUnprivileged('pull', await temp('mirrorswap-modes-pull-'));
  });

  it('slots whose modes drifted (a 0000 directory or file, a 0555 root, read-only leftovers in a temp directory) are repaired by a full sync and a whole pull, and pulled into', async () => {
    await runUnprivileged('drift', await temp('mirrorswap-modes-drift-'));
  });
});
