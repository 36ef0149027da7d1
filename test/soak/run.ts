/**
 * `npm run soak [-- --duration 10m]`: the long swap-under-load soak. Exits
 * non-zero when any response was wrong or throughput during swaps fell under
 * 0.9 of steady throughput.
 */
import ms from 'ms';
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
process.exitCode = wrong === 0 && report.ratio >= 0.9 ? 0 : 1;
