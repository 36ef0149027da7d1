import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  configProblem,
  isTrustedMaster,
  masterNamedBy,
  readMasterPid,
  runningMasters,
} from '../../src/nginx/nginx-processes.js';
import { waitFor } from '../../testkit/wait.js';

/**
 * A process of another user can give itself any title, and take a pid a dead
 * nginx left in its pid file. A root companion that trusted it would signal
 * it, and run its binary with its arguments as `nginx -t`.
 */
describe('the nginx companion trusts only masters of root or its own user', () => {
  let dir: string;
  let stranger: ChildProcess;
  let own: ChildProcess;
  const title = (conf: string) => `nginx: master process /usr/sbin/nginx -c ${conf}`;

  /** `sleep` under an nginx master's title, as `user` (null: as this process's user). */
  function fakeMaster(conf: string, user: number | null): ChildProcess {
    const script = `exec -a "${title(conf)}" sleep 60`;
    const child =
      user === null
        ? spawn('bash', ['-c', script], { stdio: 'ignore' })
        : spawn('setpriv', [`--reuid=${user}`, `--regid=${user}`, '--clear-groups', 'bash', '-c', script], {
            stdio: 'ignore',
          });
    return child;
  }

  before(async () => {
    assert.equal(
      process.getuid?.(),
      0,
      'this test runs as root (as the integration tier does in CI): it starts a process of another user',
    );
    dir = await mkdtemp(join(tmpdir(), 'mirrorswap-nginx-trust-'));
    stranger = fakeMaster(join(dir, 'stranger.conf'), 65534);
    own = fakeMaster(join(dir, 'own.conf'), null);
    await waitFor('both fake masters to have their titles', async () => {
      const { readFile } = await import('node:fs/promises');
      const t = async (pid: number | undefined) =>
        (await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')).startsWith('nginx: master');
      return (await t(stranger.pid)) && (await t(own.pid));
    });
  });
  after(async () => {
    stranger?.kill('SIGKILL');
    own?.kill('SIGKILL');
    await rm(dir, { recursive: true, force: true });
  });

  it("refuses another user's process whatever its title, through a pid file, a scan or a reload command", async () => {
    const pid = stranger.pid as number;
    assert.equal(await isTrustedMaster(pid), false);
    const pidFile = join(dir, 'nginx.pid');
    await writeFile(pidFile, `${pid}\n`);
    assert.equal(await readMasterPid(pidFile), null, 'a pid file naming a stranger names no master');
    assert.ok(!(await runningMasters()).includes(pid));
    assert.equal(await masterNamedBy(`nginx -c ${join(dir, 'stranger.conf')} -s reload`), null);
    assert.equal(await configProblem(pid), null, "a stranger's binary is never run");
  });

  it('takes a master of its own user (the control: the refusal above is the owner, not the title)', async () => {
    const pid = own.pid as number;
    assert.equal(await isTrustedMaster(pid), true);
    assert.ok((await runningMasters()).includes(pid));
  });
});
