/**
 * `npm run soak [-- --duration 10m --crash-runs 50]`: the long swap-under-load
 * soak, then the crash campaign. Exits non-zero when any response was wrong,
 * throughput during swaps fell under 0.9 of steady, or an invariant broke.
 */
import ms from 'ms';
import { runCrashCampaign } from './crash-campaign.js';
import { runSoak } from './soak.js';

const i = process.argv.indexOf('--duration');
const durationMs = i === -1 ? 60_000 : (ms((process.argv[i + 1] ?? '60s') as ms.StringValue) ?? 60_000);
const report = await runSoak({ durationMs });
console.log(JSON.stringify(report, null, 2));
const wrong = report.errors + report.torn + report.etagMismatches + report.regressions + report.failedSwaps;
console.log(
  `${report.requests} requests, ${report.swaps} swaps, ${report.writes} write batches; errors ${report.errors}, torn ${report.torn}, ` +
    `ETag mismatches ${report.etagMismatches}, regressions ${report.regressions}, failed swaps ${report.failedSwaps}; ` +
    `throughput during swaps ${report.ratio.toFixed(2)} of steady (${report.swappingRps.toFixed(0)} / ${report.steadyRps.toFixed(0)} req/s)`,
);
const c = process.argv.indexOf('--crash-runs');
const runs = c === -1 ? 50 : Number(process.argv[c + 1]);
let crashOk = true;
try {
  await runCrashCampaign({ runs, log: (line) => console.log(line) });
  console.log(`crash campaign: ${runs} runs, every invariant held`);
} catch (err) {
  crashOk = false;
  console.error(`crash campaign failed: ${(err as Error).message}`);
}
process.exitCode = wrong === 0 && report.ratio >= 0.9 && crashOk ? 0 : 1;
