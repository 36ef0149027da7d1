/**
 * `npm run soak [-- --duration 10m --crash-runs 50]`: the long swap-under-load
 * soak, then the crash campaign. Exits non-zero when any response was wrong or
 * an invariant broke, and, with `--min-ratio R`, when throughput during swaps
 * fell under R of steady. `--no-writes` / `--no-swaps` leave out one half of
 * the publishing, to see what each costs; with both, quiet windows are
 * compared with quiet windows: the measurement's own noise.
 */
import { availableParallelism } from 'node:os';
import { type FlagSpecs, durationFlag, parseFlags } from '../../src/cli/flags.js';
import type { CpuShare } from './cpu.js';
import { runCrashCampaign } from './crash-campaign.js';
import { type SoakReport, runSoak } from './soak.js';

/** The target for throughput during swaps, reported against. */
const TARGET_RATIO = 0.9;

const FLAGS: FlagSpecs = {
  duration: { type: 'string', default: '60s', help: 'how long the soak runs' },
  'crash-runs': { type: 'string', default: '50', help: 'runs of the crash campaign' },
  connections: { type: 'string', default: '12', help: 'keep-alive connections of the load generator' },
  'min-ratio': { type: 'string', default: '0', help: 'fail under this throughput during swaps / steady' },
  writes: { type: 'boolean', default: true, help: 'send write batches (--no-writes: swaps only)' },
  swaps: { type: 'boolean', default: true, help: 'send sync signals (--no-swaps: writes only)' },
  hostile: {
    type: 'boolean',
    default: true,
    help: 'clients that hang up at every stage and a server stopped past its lease (--no-hostile: off)',
  },
};
const values = parseFlags(process.argv.slice(2), FLAGS, {});
const durationMs = durationFlag(values, 'duration', { min: 1 }) as number;
/** A whole-number flag of at least `min`. */
const wholeFlag = (name: string, min: number): number => {
  const n = Number(values[name]);
  if (!Number.isInteger(n) || n < min)
    throw new Error(`--${name} ${values[name]}: give a whole number of at least ${min}`);
  return n;
};
const runs = wholeFlag('crash-runs', 0);
const connections = wholeFlag('connections', 1);
const minRatio = Number(values['min-ratio']);
if (!(minRatio >= 0)) throw new Error(`--min-ratio ${values['min-ratio']}: give a number such as 0.9`);

const report = await runSoak({
  durationMs,
  connections,
  writes: values.writes !== false,
  swaps: values.swaps !== false,
  hostile: values.hostile !== false,
});
console.log(JSON.stringify(report, null, 2));
const wrong =
  report.errors + report.torn + report.etagMismatches + report.regressions + report.failedSwaps + report.leakedCounts;
console.log(
  `${report.requests} requests, ${report.swaps} swaps, ${report.writes} write batches; errors ${report.errors}, torn ${report.torn}, ` +
    `ETag mismatches ${report.etagMismatches}, regressions ${report.regressions}, failed swaps ${report.failedSwaps}; ` +
    `precompressed answers decoded and checked: br ${report.encoded.br}, gzip ${report.encoded.gzip}; ` +
    `${report.aborted} aborted requests, ${report.stalls} stalls past the lease (${report.stalledServerRequests} requests to that server), leaked counts ${report.leakedCounts}; ` +
    `throughput during swaps ${report.ratio.toFixed(2)} of steady (${report.swappingRps.toFixed(0)} / ${report.steadyRps.toFixed(0)} req/s, ` +
    `${report.windows} pairs of ${report.windowMs / 1000} s windows, pairs say ${report.ratioInterval.map((r) => r.toFixed(2)).join('–')}; quiet windows of the second half / first half: ${report.quietRatio.toFixed(2)}); ` +
    `target ${TARGET_RATIO}: ${report.ratio >= TARGET_RATIO ? 'met' : 'NOT met'}`,
);
console.log(whereTheCpuWent(report));
let crashOk = true;
try {
  await runCrashCampaign({ runs, log: (line) => console.log(line) });
  console.log(`crash campaign: ${runs} runs, every invariant held`);
} catch (err) {
  crashOk = false;
  console.error(`crash campaign failed: ${(err as Error).message}`);
}
process.exitCode = wrong === 0 && crashOk && report.ratio >= minRatio ? 0 : 1;

/**
 * What the swapping windows cost in CPU, next to the quiet ones: the agent's
 * cores, the servers' CPU per request, and how busy the machine was. On a
 * machine the load already keeps busy, the ratio comes to about one minus the
 * swap work's share of the busy cores.
 */
function whereTheCpuWent({ cpu, steadyRps, swappingRps }: SoakReport): string {
  const busy = (s: CpuShare) => (s.loadGenerator + s.servers + s.agent + s.other).toFixed(2);
  const perRequest = (cores: number, rps: number) => (rps > 0 ? `${Math.round((cores / rps) * 1e6)} µs` : 'n/a');
  return (
    `CPU, quiet → swapping windows: agent ${cpu.steady.agent.toFixed(2)} → ${cpu.swapping.agent.toFixed(2)} cores; ` +
    `servers ${perRequest(cpu.steady.servers, steadyRps)} → ${perRequest(cpu.swapping.servers, swappingRps)} per request; ` +
    `machine busy ${busy(cpu.steady)} → ${busy(cpu.swapping)} of ${availableParallelism()} cores`
  );
}
