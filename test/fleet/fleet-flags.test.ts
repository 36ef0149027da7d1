import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { AGENT_FLAGS } from '../../src/cli/commands/agent.js';
import { FLEET_DEFAULTS, coordinatorFrom } from '../../src/cli/fleet-flags.js';
import { parseFlags } from '../../src/cli/flags.js';
import { cli } from '../../testkit/proc.js';

// Each case starts the CLI as a process: the full tier's, where tests of whole processes live.
describe('fleet flags', () => {
  it('the host agent refuses what it cannot run with, naming the fix', async () => {
    const [noEtcd, noFleet, badFleet, badUrl, noToken, shortLease] = await Promise.all([
      cli(['host', '--store', '/nonexistent-store']),
      cli(['host', '--etcd', 'http://127.0.0.1:1']),
      cli(['host', '--etcd', 'http://127.0.0.1:1', '--fleet', '../web']),
      cli(['host', '--etcd', 'etcd.internal:2379', '--fleet', 'web']),
      cli(['host', '--etcd', 'http://127.0.0.1:1', '--fleet', 'web']),
      cli(['host', '--etcd', 'http://127.0.0.1:1', '--fleet', 'web', '--fleet-lease', '1s']),
    ]);
    assert.equal(noEtcd.code, 2);
    assert.match(noEtcd.output, /--etcd URL\[,URL…\] is required/);
    assert.equal(noFleet.code, 2);
    assert.match(noFleet.output, /--fleet NAME is required with --etcd/);
    assert.equal(badFleet.code, 2);
    assert.match(badFleet.output, /--fleet \.\.\/web: letters, digits/);
    assert.equal(badUrl.code, 2);
    assert.match(badUrl.output, /must be http:\/\/ or https:\/\//);
    assert.equal(noToken.code, 2);
    assert.match(noToken.output, /--token-file is required/);
    assert.equal(shortLease.code, 2);
    assert.match(shortLease.output, /--fleet-lease/);
  });

  it('the coordinator needs the fleet token and a URL hosts can reach', async () => {
    const common = ['agent', '--store', '/nonexistent-store', '--token-file', '/nonexistent-token'];
    const noFleetToken = await cli([...common, '--etcd', 'http://127.0.0.1:1', '--fleet', 'web']);
    assert.equal(noFleetToken.code, 2);
    assert.match(
      noFleetToken.output,
      /--token-file \/nonexistent-token: cannot read it|--fleet-token-file is required/,
    );
    const listen = { host: '127.0.0.1', port: 7070 };
    const base = ['--etcd', 'http://127.0.0.1:1', '--fleet', 'web', '--fleet-token-file', '/nonexistent-token'];
    await assert.rejects(
      coordinatorFrom(parseFlags(base.slice(0, 4), AGENT_FLAGS), listen),
      /--fleet-token-file is required/,
    );
    await assert.rejects(
      coordinatorFrom(parseFlags(base, AGENT_FLAGS), listen),
      /--fleet-token-file \/nonexistent-token: cannot read it/,
    );
    const dir = await mkdtemp(join(tmpdir(), 'mirrorswap-flags-'));
    try {
      const token = join(dir, 'token');
      await writeFile(token, 'a-fleet-token-of-enough-length\n', { mode: 0o600 });
      const ok = ['--etcd', 'http://127.0.0.1:1', '--fleet', 'web', '--fleet-token-file', token];
      await assert.rejects(
        coordinatorFrom(parseFlags([...ok, '--straggler', 'maybe'], AGENT_FLAGS), listen),
        /--straggler maybe: block or evict/,
      );
      await assert.rejects(
        coordinatorFrom(parseFlags(ok, AGENT_FLAGS), { host: '0.0.0.0', port: 7070 }),
        /--advertise URL is required/,
      );
      const fleet = await coordinatorFrom(parseFlags(ok, AGENT_FLAGS), listen);
      assert.equal(fleet?.url, 'http://127.0.0.1:7070');
      assert.equal(fleet?.straggler, FLEET_DEFAULTS.straggler);
      assert.equal(fleet?.prepareTimeoutMs, FLEET_DEFAULTS.prepareTimeoutMs);
      assert.equal(fleet?.leaseTtlSeconds, FLEET_DEFAULTS.leaseTtlMs / 1000);
      fleet?.etcd.close();
      assert.equal(await coordinatorFrom(parseFlags([], AGENT_FLAGS), listen), undefined, 'no --etcd: no fleet');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
