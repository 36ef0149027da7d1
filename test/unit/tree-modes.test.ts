import { after, describe, it } from 'node:test';
import { runUnprivileged } from '../helpers/unprivileged.js';
import { tempDirs } from '../helpers/store.js';

// Each case runs as an unprivileged user (see runUnprivileged): as root, every
// permission check passes and a read-only directory wedges nothing.
const temp = tempDirs();
after(() => temp.removeAll());

describe('trees of any mode, copied by an unprivileged agent', () => {
  it('read-only directories at several depths go through init, journal and full syncs, mode changes, deletes; unreadable entries are reported and counted', async () => {
    await runUnprivileged('agent', await temp.make('mirrorswap-modes-agent-'));
  });

  it('a host slot with read-only directories takes later pulls under them, deltas and whole compares alike', async () => {
    await runUnprivileged('pull', await temp.make('mirrorswap-modes-pull-'));
  });
});
