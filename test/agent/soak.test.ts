import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { extract as tarExtract } from 'tar-stream';
import { FILES, batchTar, body, versionOf } from '../../testkit/soak/content.js';
import { runSoak } from '../../testkit/soak/soak.js';

describe('the soak tear detector', () => {
  it('names the version of a whole body or an aligned slice of one', () => {
    assert.equal(versionOf(Buffer.from(body(7, 2048))), 7);
    assert.equal(versionOf(Buffer.from(body(12, 512 * 1024)).subarray(900, 900 + 1800)), 12);
  });
  it('rejects a body that mixes versions, is cut short in a token or is not a body at all', () => {
    const torn = Buffer.concat([Buffer.from(body(3, 1800)), Buffer.from(body(4, 1800))]);
    assert.equal(versionOf(torn), -1);
    const oneByte = Buffer.from(body(5, 2048));
    oneByte[1000] = 0x30 + ((oneByte[1000] as number) === 0x30 ? 1 : 0);
    assert.equal(versionOf(oneByte), -1);
    assert.equal(versionOf(Buffer.from(body(5, 2048)).subarray(0, 100)), -1);
    assert.equal(versionOf(Buffer.from('not a body\n'.repeat(9))), -1);
    assert.equal(versionOf(Buffer.alloc(0)), -1);
  });
});

describe('the soak publisher', () => {
  it("sends a tar batch whose every file is that version's body", async () => {
    const extract = tarExtract();
    extract.end(await batchTar(42));
    const files: { path: string; content: string }[] = [];
    for await (const entry of extract) {
      const chunks: Buffer[] = [];
      for await (const chunk of entry) chunks.push(chunk as Buffer);
      assert.equal(entry.header.type, 'file');
      files.push({ path: entry.header.name, content: Buffer.concat(chunks).toString() });
    }
    assert.deepEqual(
      files,
      FILES.map((f) => ({ path: f.path, content: body(42, f.size) })),
    );
  });
});

describe('swaps under load (short soak; `npm run soak` runs long)', () => {
  it('serves every request whole from one version, with no error, while swaps run back to back', async () => {
    // 20 s: a swap waits out the server stopped past its lease (3 s) when one falls in a stall; on a
    // machine loaded by the rest of the suite it runs on (up to 45 s) until 8 swaps have happened
    const report = await runSoak({ durationMs: 20_000, minSwaps: 8, maxDurationMs: 45_000 });
    console.log(
      `soak: ${report.requests} requests, ${report.swaps} swaps, ${report.writes} write batches (up to version ${report.maxVersionServed} served), ${report.aborted} aborted, ${report.stalls} stalls (${report.stalledServerRequests} requests to the stalled server), ${report.leakedCounts} leaked counts, throughput during swaps ${report.ratio.toFixed(2)} of steady`,
    );
    assert.deepEqual(report.firstErrors, []);
    assert.equal(report.errors, 0);
    assert.equal(report.torn, 0);
    assert.equal(report.etagMismatches, 0);
    assert.equal(report.regressions, 0);
    assert.equal(report.failedSwaps, 0);
    assert.equal(report.leakedCounts, 0);
    assert.ok(report.aborted > 100, `only ${report.aborted} aborted requests`);
    assert.ok(report.stalls >= 1, 'the stalling server was never stopped past the lease');
    assert.ok(
      report.stalledServerRequests > 10,
      `only ${report.stalledServerRequests} requests to the stalling server`,
    );
    // about half of the 20 s is swapping windows, shared with the rest of the suite: bounds with room
    assert.ok(report.windows >= 2, `only ${report.windows} pairs of windows`);
    assert.ok(report.swaps >= 8, `only ${report.swaps} swaps in 45 s`);
    assert.ok(report.writes >= 5, `only ${report.writes} write batches`);
    assert.ok(report.maxVersionServed >= 3, `clients saw only up to version ${report.maxVersionServed}`);
    assert.ok(report.requests > 1000, `only ${report.requests} requests`);
    assert.ok(report.steadyRps > 0 && report.ratio > 0, 'no throughput measured in one kind of window');
  });
});

describe('crash campaign (a few runs; `npm run soak` runs 50)', () => {
  it('keeps every invariant when the agent, and now and then a web server, is killed at random', async () => {
    const { runCrashCampaign } = await import('../../testkit/soak/crash-campaign.js');
    assert.equal(await runCrashCampaign({ runs: 5 }), 5);
  });
});
