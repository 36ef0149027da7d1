import assert from 'node:assert/strict';
import { lstat, readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { brotliDecompressSync, gunzipSync, gzipSync } from 'node:zlib';
import type { SwapRecord } from '../../src/agent/agent.js';
import { readEpochFile } from '../../src/store/epoch-file.js';
import { readCopyIndex } from '../../src/store/recent-records.js';
import { META_DIR_NAME } from '../../src/store/store-layout.js';
import { variantSelectionPath } from '../../src/tree/variant-selection.js';
import { startAgentProc, startWebProc } from '../../testkit/cluster.js';
import { type EtcdCluster, startEtcdCluster } from '../../testkit/etcd.js';
import { type FleetCoordinatorProc, type HostStatusBody, TestFleet } from '../../testkit/fleet.js';
import { rawGet } from '../../testkit/server.js';
import { type TempStore, tempStore } from '../../testkit/store.js';
import { compressibleText } from '../../testkit/variants.js';
import { waitFor } from '../../testkit/wait.js';

/*
 * The coordinator's variant settings reach every host. The coordinator derives each of its copies
 * whole when its settings change (variant-selection.ts); hosts compress nothing and hold what the
 * coordinator's copy holds: a coding turned off or a type dropped on the coordinator must be gone from
 * both copies of every host, and neither listed in their content indexes nor served, once two syncs have
 * run; turned on again, it is back. The selection record is the coordinator's own: never in a manifest,
 * never on a host.
 */

const ORIGINALS: Record<string, string> = {
  'js/app.js': compressibleText('app', 20_000),
  'css/site.css': compressibleText('style', 8_000),
  // master's own gzip sibling: content of the site, whatever the settings (never a made variant)
  'vendor/lib.js': compressibleText('lib', 6_000),
  'data/small.txt': 'under the size floor\n',
};
const OWN_GZIP = 'vendor/lib.js.gz';

/** The codings a copy following `settings` holds of each original, made (`br`, `gzip`) or master's own (`gzip*`). */
type Expected = Record<string, string[]>;
const DEFAULTS: Expected = {
  'js/app.js': ['br', 'gzip'],
  'css/site.css': ['br', 'gzip'],
  'vendor/lib.js': ['br', 'gzip*'],
  'data/small.txt': [],
};
const BR_ONLY: Expected = {
  'js/app.js': ['br'],
  'css/site.css': ['br'],
  'vendor/lib.js': ['br', 'gzip*'],
  'data/small.txt': [],
};
const CSS_ONLY: Expected = {
  'js/app.js': [],
  'css/site.css': ['br', 'gzip'],
  'vendor/lib.js': ['gzip*'],
  'data/small.txt': [],
};

const SUFFIX = { br: '.br', gzip: '.gz' } as const;
const decode = (coding: string, body: Buffer) =>
  coding === 'br' ? brotliDecompressSync(body) : coding === 'gzip' ? gunzipSync(body) : body;

/** What `slotRoot` holds beside each original, on disk and in its content index, checked against `expected`. */
async function checkCopy(where: string, slotRoot: string, expected: Expected): Promise<void> {
  for (const [path, codings] of Object.entries(expected)) {
    const cut = path.lastIndexOf('/');
    const [dir, name] = [path.slice(0, cut), path.slice(cut + 1)];
    const onDisk = (await readdir(join(slotRoot, dir)))
      .filter((n) => n === `${name}.br` || n === `${name}.gz`)
      .map((n) => (n.endsWith('.br') ? 'br' : 'gzip'))
      .sort();
    assert.deepEqual(
      onDisk,
      codings.map((c) => c.replace('*', '')),
      `${where}: the variants of ${path} on disk`,
    );
    const record = (await readCopyIndex(slotRoot, dir))?.files[name];
    assert.ok(record, `${where}: ${path} has a record`);
    const listed = Object.entries(record.variants ?? {})
      .map(([coding, v]) => (v.made ? coding : `${coding}*`))
      .sort();
    assert.deepEqual(listed, codings, `${where}: the variants its index lists of ${path}`);
    for (const coding of codings.filter((c) => c === 'br')) {
      assert.equal(
        decode(coding, await readFile(join(slotRoot, path + SUFFIX[coding]))).toString(),
        ORIGINALS[path],
        `${where}: ${path}.br decodes to its original`,
      );
    }
  }
}

interface Served {
  coding: string;
  etag: string;
}

/** What the web server on `port` answers for each original, asked for identity, gzip and br (bodies checked). */
async function servedBy(where: string, port: number, expected: Expected): Promise<Record<string, Served>> {
  const out: Record<string, Served> = {};
  for (const [path, codings] of Object.entries(expected)) {
    const held = codings.map((c) => c.replace('*', ''));
    for (const accept of ['identity', 'gzip', 'br']) {
      const res = await rawGet(port, `/${path}`, { 'accept-encoding': accept });
      assert.equal(res.status, 200, `${where}: ${path} as ${accept}`);
      const coding = String(res.headers['content-encoding'] ?? 'identity');
      assert.equal(coding, held.includes(accept) ? accept : 'identity', `${where}: ${path} asked as ${accept}`);
      assert.equal(decode(coding, res.body).toString(), ORIGINALS[path], `${where}: ${path} as ${coding}`);
      out[`${path} ${accept}`] = { coding, etag: String(res.headers.etag ?? '') };
    }
  }
  // master's own sibling is a file of the site; a made variant is not served by name
  assert.equal((await rawGet(port, `/${OWN_GZIP}`)).status, 200, `${where}: ${OWN_GZIP} by name`);
  assert.equal((await rawGet(port, '/js/app.js.gz')).status, 404, `${where}: js/app.js.gz by name`);
  return out;
}

const slotOf = async (store: TempStore) => {
  const epoch = await readEpochFile(store.epochFile);
  assert.ok(epoch);
  return epoch;
};

describe("the coordinator's variant settings reach every host", { timeout: 120_000 }, () => {
  let cluster: EtcdCluster;
  const fleets: TestFleet[] = [];
  const stores: TempStore[] = [];
  const webs: { proc: { kill(): Promise<void> } }[] = [];

  before(async () => {
    cluster = await startEtcdCluster(1);
  });
  after(async () => {
    for (const w of webs) await w.proc.kill().catch(() => {});
    for (const f of fleets) await f.stop();
    for (const s of stores) await s.dispose().catch(() => {});
    await cluster?.stop();
  });

  /**
   * A fleet of a coordinator (default settings) and two hosts, with a web server over each store;
   * `settings(args)` restarts the coordinator over the same store with those variant flags and syncs
   * twice (nothing changed in master), then checks every copy and what every web server answers.
   */
  async function fleetOf(name: string) {
    const f = await TestFleet.create(cluster, name);
    fleets.push(f);
    const store = await tempStore(`mirrorswap-fleet-${name}-`);
    stores.push(store);
    await store.fill('master', { ...ORIGINALS, [OWN_GZIP]: gzipSync(ORIGINALS['vendor/lib.js'] as string) });
    let coordinator: FleetCoordinatorProc = await f.startCoordinator([], store);
    const hosts = [await f.addHost(`${name}-1`), await f.addHost(`${name}-2`)];
    const web = await startWebProc(store, `web-${name}-coordinator`);
    webs.push(web);
    const base = coordinator.args;

    /** Two syncs; each host's pull of each. */
    const syncTwice = async (): Promise<NonNullable<HostStatusBody['lastPull']>[]> => {
      const pulls: NonNullable<HostStatusBody['lastPull']>[] = [];
      for (let i = 0; i < 2; i++) {
        const res = await coordinator.api<SwapRecord>('POST', '/v1/sync?wait=1');
        assert.equal(res.status, 200, JSON.stringify(res.body));
        await f.converged(res.body.epoch, hosts);
        // the selection record is the coordinator's own: no manifest lists it, no host holds it
        const snapshot = (await hosts[0]?.status())?.lastPull?.snapshot;
        assert.ok(snapshot);
        const manifest = await fetch(`${coordinator.url}/v1/fleet/manifest?snapshot=${snapshot}`, {
          headers: { authorization: `Bearer ${f.token}` },
        });
        assert.equal(manifest.status, 200);
        const text = await manifest.text();
        assert.ok(!text.includes(META_DIR_NAME) && !text.includes('variant-selection'), text.slice(0, 500));
        for (const h of hosts)
          for (const slot of ['a', 'b'] as const)
            await assert.rejects(lstat(variantSelectionPath(h.store.slots[slot])), `${h.id}:${slot} holds a selection`);
        for (const h of hosts) {
          const pull = (await h.status()).lastPull;
          assert.ok(pull);
          pulls.push(pull);
        }
      }
      return pulls;
    };

    const check = async (expected: Expected): Promise<void> => {
      const at = await slotOf(store);
      for (const slot of ['a', 'b'] as const) await checkCopy(`coordinator:${slot}`, store.slots[slot], expected);
      const want = await servedBy('coordinator', web.port, expected);
      for (const h of hosts) {
        const own = await slotOf(h.store);
        assert.equal(own.epoch, at.epoch, `${h.id} serves the coordinator's epoch`);
        // its mounted copy, then the other (both pulled since the settings changed)
        for (const slot of [own.mounted, own.mounted === 'a' ? 'b' : 'a'] as const)
          await checkCopy(`${h.id}:${slot}`, h.store.slots[slot], expected);
        const got = await servedBy(h.id, h.web?.port ?? 0, expected);
        // the same bytes, the same ETag as the coordinator's
        assert.deepEqual(got, want, `${h.id}: the codings and ETags the coordinator's server answers`);
      }
    };

    const settings = async (args: string[]): Promise<NonNullable<HostStatusBody['lastPull']>[]> => {
      await coordinator.proc.kill();
      const proc = await startAgentProc(store, f.tokenFile, f.token, [...base, ...args]);
      coordinator = { ...proc, store, args: [...base, ...args] };
      f.coordinator = coordinator;
      const current = coordinator;
      await waitFor(
        'the restarted coordinator to be elected',
        async () =>
          (await current.api<{ fleet: { coordinator: { elected: boolean } } }>('GET', '/v1/status')).body.fleet
            .coordinator.elected,
        { timeout: 15_000, step: 50 },
      );
      return syncTwice();
    };

    return { hosts, syncTwice, check, settings };
  }

  it('--variant-encodings br: no gzip variant made is left on a host, listed or served; back to the defaults, they return', async () => {
    const fleet = await fleetOf('codings');
    await fleet.syncTwice();
    await fleet.check(DEFAULTS);
    const pulls = await fleet.settings(['--variant-encodings', 'br']);
    await fleet.check(BR_ONLY);
    // what a host pulls is what the coordinator's copy changed: no file (the gz variants removed)
    for (const p of pulls) assert.equal(p.files, 0, JSON.stringify(p));
    await fleet.settings([]);
    await fleet.check(DEFAULTS);
  });

  it("--variant-types css: js files lose their variants on every host (master's own sibling stays); back to the defaults, they return", async () => {
    const fleet = await fleetOf('types');
    await fleet.syncTwice();
    await fleet.check(DEFAULTS);
    await fleet.settings(['--variant-types', 'css']);
    await fleet.check(CSS_ONLY);
    await fleet.settings([]);
    await fleet.check(DEFAULTS);
  });
});
