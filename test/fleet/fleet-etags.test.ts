import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { Agent as HttpAgent, request } from 'node:http';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { SwapRecord } from '../../src/agent/agent.js';
import { strongEtag } from '../../src/store/content-index.js';
import { type EtcdCluster, startEtcdCluster } from '../../testkit/etcd.js';
import { type FleetHostProc, TestFleet } from '../../testkit/fleet.js';
import { tempStore } from '../../testkit/store.js';
import { compressibleText } from '../../testkit/variants.js';

/*
 * Content ETags across a fleet: the same bytes carry the same strong ETag on every host and in every
 * release, taken from the content hash the copy recorded (never per request, never per host). 10,000
 * files (a third of them compressible, with br and gzip variants) on two hosts through three releases,
 * each of which rewrites a third of the files. Each release's sync and the 20,000 requests that read its
 * tags take about 15 s each on two cores.
 */

const FILES = 10_000;
const DIRS = 100;

const pathOf = (i: number) => `d${i % DIRS}/f${i}.${i % 3 === 0 ? 'js' : 'txt'}`;

/** File i's bytes in release r: a third of the files change in each release after the first. */
function contentOf(i: number, release: number): Buffer {
  const version = release > 1 && i % 3 === release - 2 ? release : 1;
  // the .js files are 2 KB or more of text (variants made); the others are small (none)
  return Buffer.from(
    i % 3 === 0 ? compressibleText(`f${i}_${version}`, 2048 + (i % 7) * 300) : `file ${i} v${version}\n`,
  );
}

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('base64url');

function head(
  port: number,
  path: string,
  agent: HttpAgent,
  encoding: string,
): Promise<{ status: number; etag: string; coding: string }> {
  return new Promise((resolve, reject) => {
    const req = request(
      { host: '127.0.0.1', port, path: `/${path}`, method: 'HEAD', agent, headers: { 'accept-encoding': encoding } },
      (res) => {
        res.resume();
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            etag: String(res.headers.etag ?? ''),
            coding: String(res.headers['content-encoding'] ?? 'identity'),
          }),
        );
      },
    );
    req.on('error', reject);
    req.end();
  });
}

/** The ETag of every file on `host`, and of every tenth .js file's br variant (never served by name), 16 requests at a time. */
async function etagsOn(host: FleetHostProc): Promise<{ identity: string[]; br: string[]; problems: string[] }> {
  const agent = new HttpAgent({ keepAlive: true, maxSockets: 16 });
  const identity: string[] = new Array(FILES);
  const br: string[] = new Array(FILES);
  const problems: string[] = [];
  let next = 0;
  const port = host.web?.port ?? 0;
  await Promise.all(
    Array.from({ length: 16 }, async () => {
      for (let i = next++; i < FILES; i = next++) {
        const plain = await head(port, pathOf(i), agent, 'identity');
        if (plain.status !== 200 || plain.coding !== 'identity')
          problems.push(`${pathOf(i)}: ${JSON.stringify(plain)}`);
        identity[i] = plain.etag;
        if (i % 30 === 0) {
          const coded = await head(port, pathOf(i), agent, 'br');
          if (coded.status !== 200 || coded.coding !== 'br')
            problems.push(`${pathOf(i)} as br: ${JSON.stringify(coded)}`);
          br[i] = coded.etag;
          // the variant the agent made is no file of the site: not found under its own name, as on the agent's host
          const byName = await head(port, `${pathOf(i)}.br`, agent, 'identity');
          if (byName.status !== 404) problems.push(`${pathOf(i)}.br by name: ${JSON.stringify(byName)}`);
        }
      }
    }),
  );
  agent.destroy();
  return { identity, br, problems };
}

describe('content ETags on every fleet host', { timeout: 600_000 }, () => {
  let cluster: EtcdCluster;
  let fleet: TestFleet;

  before(async () => {
    cluster = await startEtcdCluster(1);
    fleet = await TestFleet.create(cluster, 'etags');
  });
  after(async () => {
    await fleet?.stop();
    await cluster?.stop();
  });

  it('10,000 files, two hosts, three releases: one strong ETag per content, the same on both hosts', async () => {
    const store = await tempStore('mirrorswap-fleet-etags-');
    const writeRelease = async (release: number) => {
      for (let i = 0; i < FILES; i++) {
        const changed = release === 1 || contentOf(i, release).compare(contentOf(i, release - 1)) !== 0;
        if (!changed) continue;
        await mkdir(join(store.master, `d${i % DIRS}`), { recursive: true });
        await writeFile(join(store.master, pathOf(i)), contentOf(i, release));
      }
    };
    await writeRelease(1);
    const started = Date.now();
    // it listens once it has made its two copies of 10,000 files, with their variants: longer than the
    // usual 15 s when another test file runs beside it
    const coordinator = await fleet.startCoordinator(['--prepare-timeout', '60s'], store, { listenTimeoutMs: 120_000 });
    console.log(`coordinator ready in ${Date.now() - started} ms`);
    const hosts = [await fleet.addHost('e1'), await fleet.addHost('e2')];
    const brTags = new Map<string, string>(); // content hash -> the br variant's tag, across hosts and releases
    for (let release = 1; release <= 3; release++) {
      const t0 = Date.now();
      if (release > 1) await writeRelease(release);
      const t1 = Date.now();
      const res = await coordinator.api<SwapRecord>('POST', '/v1/sync?wait=1');
      assert.equal(res.status, 200, JSON.stringify(res.body));
      await fleet.converged(res.body.epoch, hosts, 60_000);
      const t2 = Date.now();
      const seen = await Promise.all(hosts.map(etagsOn));
      console.log(`release ${release}: write ${t1 - t0} ms, sync ${t2 - t1} ms, requests ${Date.now() - t2} ms`);
      for (const [h, s] of seen.entries())
        assert.deepEqual(s.problems.slice(0, 5), [], `${hosts[h]?.id}, release ${release}`);
      let variants = 0;
      for (let i = 0; i < FILES; i++) {
        const hash = sha256(contentOf(i, release));
        const want = strongEtag(hash);
        for (const [h, s] of seen.entries())
          assert.equal(s.identity[i], want, `${pathOf(i)} on ${hosts[h]?.id} in release ${release}`);
        if (i % 30 !== 0) continue;
        variants++;
        const [a, b] = [seen[0]?.br[i], seen[1]?.br[i]];
        assert.equal(a, b, `${pathOf(i)} as br: the same tag on both hosts`);
        assert.match(a ?? '', /^"[A-Za-z0-9_-]+"$/, 'a strong tag');
        assert.notEqual(a, want, "a variant's tag is not its original's");
        const before = brTags.get(hash);
        if (before !== undefined) assert.equal(a, before, `${pathOf(i)} as br: the same tag in every release`);
        brTags.set(hash, a ?? '');
      }
      assert.ok(variants > 300);
    }
  });
});
