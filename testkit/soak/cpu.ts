import { readFileSync, readdirSync } from 'node:fs';

/** CPU seconds a process has used so far (Linux /proc; 0 where there is none). */
export function processCpuSeconds(pid: number | undefined): number {
  if (pid === undefined || pid === process.pid) {
    const u = process.cpuUsage();
    return (u.user + u.system) / 1e6;
  }
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? [];
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return 0;
  }
}

/** Context switches of every thread of a process so far, voluntary or not (Linux /proc). */
export function threadSwitches(pid: number): number {
  let switches = 0;
  for (const task of readdirSync(`/proc/${pid}/task`)) {
    try {
      const status = readFileSync(`/proc/${pid}/task/${task}/status`, 'utf8');
      for (const m of status.matchAll(/^(?:non)?voluntary_ctxt_switches:\s+(\d+)$/gm)) switches += Number(m[1]);
    } catch {
      // a thread that ended between the listing and the read
    }
  }
  return switches;
}

/** CPU seconds the whole machine has been busy (all but idle and iowait), from /proc/stat. */
function machineBusySeconds(): number {
  try {
    const fields = (readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '').trim().split(/\s+/).slice(1).map(Number);
    return fields.reduce((sum, x, i) => (i === 3 || i === 4 ? sum : sum + x), 0) / 100;
  } catch {
    return 0;
  }
}

/** Cores each part used over some windows; "other" is the kernel's own threads, softirq and the rest. */
export interface CpuShare {
  loadGenerator: number;
  servers: number;
  agent: number;
  other: number;
}

interface Sample {
  at: number;
  loadGenerator: number;
  servers: number;
  agent: number;
  machine: number;
}

/**
 * Where the CPU went during the windows of one kind: add each window with
 * `begin()`/`end()`, read the average cores of each part with `share()`.
 */
export class CpuMeter {
  readonly #pids: { servers: (number | undefined)[]; agent: number | undefined };
  readonly #total: Sample = { at: 0, loadGenerator: 0, servers: 0, agent: 0, machine: 0 };
  #open: Sample | null = null;

  constructor(pids: { servers: (number | undefined)[]; agent: number | undefined }) {
    this.#pids = pids;
  }

  #sample(): Sample {
    return {
      at: Date.now(),
      loadGenerator: processCpuSeconds(process.pid),
      servers: this.#pids.servers.reduce((sum: number, pid) => sum + processCpuSeconds(pid), 0),
      agent: processCpuSeconds(this.#pids.agent),
      machine: machineBusySeconds(),
    };
  }

  begin(): void {
    this.#open = this.#sample();
  }

  end(): void {
    if (this.#open === null) return;
    const now = this.#sample();
    for (const k of Object.keys(now) as (keyof Sample)[]) this.#total[k] += now[k] - this.#open[k];
    this.#open = null;
  }

  share(): CpuShare {
    const t = this.#total;
    const secs = t.at / 1000 || 1;
    const r = (x: number) => Math.round((x / secs) * 100) / 100;
    return {
      loadGenerator: r(t.loadGenerator),
      servers: r(t.servers),
      agent: r(t.agent),
      other: r(t.machine - t.loadGenerator - t.servers - t.agent),
    };
  }
}
