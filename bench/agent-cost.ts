/**
 * What the agent's own work costs, on the agent alone (no web server, no
 * load): CPU time and thread switches per cycle for the soak's cycle (a write
 * batch rewriting the whole tree, 22 files and 1 MB, then the sync that copies
 * it), a write batch alone sent as tar and as JSON, and a sync with nothing to
 * copy. Each kind runs on an agent of its own, the kinds taking turns over the
 * rounds; the JSON batch is compared with the tar one side by side.
 *
 *   npm run bench:agent [-- --cycles 100 --rounds 2]
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Pool } from 'undici';
import { type AgentProc, startAgentProc } from '../testkit/cluster.js';
import { tempStore } from '../testkit/store.js';
import { FILES, TOKEN, batchTar, body } from '../testkit/soak/content.js';
import { processCpuSeconds, threadSwitches } from '../testkit/soak/cpu.js';
import { flag, machine } from './lib.js';

const cycles = flag('cycles', 100);
const rounds = flag('rounds', 2);
const TOKEN_TEXT = 'bench-token-'.repeat(3);

type Kind = 'write+sync (tar)' | 'write (tar)' | 'write (JSON)' | 'sync, nothing to copy';
const KINDS: Kind[] = ['write+sync (tar)', 'write (tar)', 'write (JSON)', 'sync, nothing to copy'];

/** CPU ms and thread switches a process has used so far, all its threads together. */
function usage(pid: number): { cpuMs: number; switches: number } {
  return { cpuMs: processCpuSeconds(pid) * 1000, switches: threadSwitches(pid) };
}

/** The JSON batch that puts every file at version k: the same content as batchTar(k). */
function batchJson(k: number): Buffer {
  const ops = FILES.map((f) => ({ op: 'put', path: f.path, content: body(k, f.size) }));
  return Buffer.from(JSON.stringify({ ops }));
}

async function send(pool: Pool, path: string, contentType: string | null, data: Buffer | null): Promise<void> {
  const res = await pool.request({
    method: 'POST',
    path,
    headers: { authorization: `Bearer ${TOKEN_TEXT}`, ...(contentType ? { 'content-type': contentType } : {}) },
    body: data,
  });
  const text = await res.body.text();
  if (res.statusCode !== 200) throw new Error(`${path} answered ${res.statusCode}: ${text}`);
}

/** Run `cycles` cycles of one kind on a fresh agent; per-cycle CPU ms, switches and wall ms. */
async function measure(kind: Kind): Promise<{ cpuMs: number; switches: number; wallMs: number }> {
  const store = await tempStore('mirrorswap-agentbench-');
  let agent: AgentProc | undefined;
  try {
    await store.fill('master', Object.fromEntries(FILES.map((f) => [f.path, body(0, f.size)])));
    await writeFile(join(store.root, 'token'), TOKEN_TEXT, { mode: 0o600 });
    agent = await startAgentProc(store, join(store.root, 'token'), TOKEN_TEXT, ['--server-ttl', '3s']);
    const pid = agent.proc.child.pid as number;
    const pool = new Pool(agent.url, { connections: 1 });
    // bodies built before the clock starts: the publisher's CPU is not the agent's
    const bodies = new Map<number, Buffer>();
    const first = 1;
    const last = first + 10 + cycles;
    if (kind !== 'sync, nothing to copy') {
      for (let k = first; k < last; k++) bodies.set(k, kind === 'write (JSON)' ? batchJson(k) : await batchTar(k));
    }
    const cycle = async (k: number) => {
      const batch = bodies.get(k);
      if (batch) {
        const type = kind === 'write (JSON)' ? 'application/json' : 'application/x-tar';
        await send(pool, '/v1/batch', type, batch);
      }
      if (kind === 'write+sync (tar)' || kind === 'sync, nothing to copy')
        await send(pool, '/v1/sync?wait=1', null, null);
    };
    for (let k = first; k < first + 10; k++) await cycle(k); // warm: code compiled, both slots synced
    const before = usage(pid);
    const t0 = performance.now();
    for (let k = first + 10; k < last; k++) await cycle(k);
    const wallMs = performance.now() - t0;
    const after = usage(pid);
    await pool.close();
    return {
      cpuMs: (after.cpuMs - before.cpuMs) / cycles,
      switches: (after.switches - before.switches) / cycles,
      wallMs: wallMs / cycles,
    };
  } finally {
    await agent?.proc.kill('SIGTERM');
    await store.dispose();
  }
}

async function main(): Promise<void> {
  console.error(`agent alone, ${cycles} cycles per kind and round, ${rounds} rounds; ${machine()}`);
  console.error(
    `a write batch: ${FILES.length} files, ${FILES.reduce((n, f) => n + Math.floor(f.size / TOKEN) * TOKEN, 0)} bytes`,
  );
  const totals = new Map<Kind, { cpuMs: number; switches: number; wallMs: number }>();
  for (let round = 0; round < rounds; round++) {
    const order = round % 2 === 0 ? KINDS : [...KINDS].reverse();
    for (const kind of order) {
      const m = await measure(kind);
      console.error(
        `  ${kind}: ${m.cpuMs.toFixed(1)} ms CPU, ${m.switches.toFixed(0)} switches, ${m.wallMs.toFixed(1)} ms per cycle`,
      );
      const t = totals.get(kind) ?? { cpuMs: 0, switches: 0, wallMs: 0 };
      totals.set(kind, { cpuMs: t.cpuMs + m.cpuMs, switches: t.switches + m.switches, wallMs: t.wallMs + m.wallMs });
    }
  }
  console.log('| cycle | agent CPU per cycle | thread switches per cycle | wall time per cycle |');
  console.log('| --- | --- | --- | --- |');
  for (const kind of KINDS) {
    const t = totals.get(kind) as { cpuMs: number; switches: number; wallMs: number };
    console.log(
      `| ${kind} | ${(t.cpuMs / rounds).toFixed(1)} ms | ${(t.switches / rounds).toFixed(0)} | ${(t.wallMs / rounds).toFixed(1)} ms |`,
    );
  }
  const json = totals.get('write (JSON)')?.cpuMs ?? 0;
  const tar = totals.get('write (tar)')?.cpuMs ?? 1;
  console.log(`\nA JSON batch costs the agent **${(json / tar).toFixed(2)}x** the CPU of the same files as tar.`);
}

await main();
