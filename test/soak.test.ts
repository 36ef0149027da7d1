import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { runSoak } from './soak/soak.js';

describe('swaps under load (short soak; `npm run soak` runs long)', () => {
  it('serves every request whole from one version, with no error, while swaps run back to back', async () => {
    const report = await runSoak({ durationMs: 15_000 });
    console.log(
      `soak: ${report.requests} requests, ${report.swaps} swaps, ${report.writes} write batches (up to version ${report.maxVersionServed} served), throughput during swaps ${report.ratio.toFixed(2)} of steady`,
    );
    assert.deepEqual(report.firstErrors, []);
    assert.equal(report.errors, 0);
    assert.equal(report.torn, 0);
    assert.equal(report.etagMismatches, 0);
    assert.equal(report.regressions, 0);
    assert.equal(report.failedSwaps, 0);
    assert.ok(report.swaps >= 15, `only ${report.swaps} swaps in 15 s`);
    assert.ok(report.writes >= 10, `only ${report.writes} write batches`);
    assert.ok(report.maxVersionServed >= 5, `clients saw only up to version ${report.maxVersionServed}`);
    assert.ok(report.requests > 1000, `only ${report.requests} requests`);
  });
});

describe('crash campaign (a few runs; `npm run soak` runs 50)', () => {
  it('keeps every invariant when the agent, and now and then a web server, is killed at random', async () => {
    const { runCrashCampaign } = await import('./soak/crash-campaign.js');
    assert.equal(await runCrashCampaign({ runs: 5 }), 5);
  });
});
