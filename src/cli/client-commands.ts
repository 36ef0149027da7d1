import type { AgentStatus, SwapRecord } from '../agent/agent.js';
import type { Difference } from '../agent/tree-copy.js';
import { CLIENT_FLAGS, layoutFrom, readToken, tokenFileFor } from './common.js';
import { type FlagSpecs, type FlagValues, UsageError, stringFlag } from './flags.js';
import { RecentRate, describeWalk, progressLine } from './progress.js';

export const SYNC_FLAGS: FlagSpecs = {
  ...CLIENT_FLAGS,
  wait: { type: 'boolean', default: false, help: 'wait until the swap is done and print what it did' },
  full: { type: 'boolean', default: false, help: 'compare whole trees instead of using the change journal' },
};
export const STATUS_FLAGS: FlagSpecs = {
  ...CLIENT_FLAGS,
  json: { type: 'boolean', default: false, help: 'print JSON' },
};
export const ROLLBACK_FLAGS: FlagSpecs = { ...CLIENT_FLAGS };
export const VERIFY_FLAGS: FlagSpecs = {
  ...CLIENT_FLAGS,
  json: { type: 'boolean', default: false, help: 'print JSON' },
};

/** A small client of the agent's API with the token attached. */
async function client(values: FlagValues) {
  const base = (stringFlag(values, 'agent') ?? 'http://127.0.0.1:7070').replace(/\/+$/, '');
  try {
    new URL(base);
  } catch {
    throw new UsageError(`--agent ${base}: must be a URL like http://127.0.0.1:7070`);
  }
  const token = await readToken(tokenFileFor(values, layoutFrom(values)));
  return async function call<T>(method: string, path: string): Promise<{ status: number; body: T }> {
    let res: Response;
    try {
      res = await fetch(`${base}${path}`, { method, headers: { authorization: `Bearer ${token}` } });
    } catch (err) {
      throw new UsageError(
        `cannot reach the agent at ${base} (${(err as Error & { cause?: Error }).cause?.message ?? (err as Error).message}); is it running? (--agent)`,
      );
    }
    const body = (await res.json().catch(() => ({}))) as T;
    if (res.status === 401) throw new UsageError('the agent refused the token (401); check --token-file');
    return { status: res.status, body };
  };
}

/** A phase time, given in seconds, shown in milliseconds. */
const phaseMillis = (seconds: number | undefined) =>
  seconds === undefined ? '-' : `${(seconds * 1000).toFixed(1)} ms`;

function describeSwap(r: SwapRecord): string {
  const head = `${r.kind} to epoch ${r.epoch} (slot ${r.from} -> ${r.to}): ${r.result}`;
  const phases = `wait ${phaseMillis(r.phases.wait)}, copy ${phaseMillis(r.phases.copy)}, publish ${phaseMillis(r.phases.publish)}, drain ${phaseMillis(r.phases.drain)}`;
  const copied = `${r.mode} copy: ${r.copied.files} files, ${r.copied.bytes} bytes, ${r.copied.deleted} deleted`;
  return [head, `  ${phases}`, `  ${copied}`, ...(r.error ? [`  error: ${r.error.message}`] : [])].join('\n');
}

export async function syncCommand(values: FlagValues): Promise<number> {
  const call = await client(values);
  const query = `?wait=${values.wait ? 1 : 0}${values.full ? '&full=1' : ''}`;
  if (!values.wait) {
    const { status } = await call('POST', `/v1/sync${query}`);
    console.log(status === 202 ? 'sync requested' : `agent answered ${status}`);
    return status === 202 ? 0 : 1;
  }
  const progress = progressLine();
  const rate = new RecentRate();
  let watching = true;
  const watch = (async () => {
    while (watching) {
      const { body } = await call<AgentStatus>('GET', '/v1/status').catch(() => ({ body: null }));
      const s = body?.swapping;
      const walk = body?.walks?.find((w) => w.purpose === 'sync');
      if (s && walk) progress.update(describeWalk(walk, Date.now(), s.copied, rate.add(Date.now(), walk.entries)));
      else if (s?.copied) progress.count(`${s.kind}: ${s.phase}`, s.copied);
      else if (s) progress.update(`${s.kind}: ${s.phase}…`);
      await new Promise((r) => setTimeout(r, 200));
    }
  })();
  const { body } = await call<SwapRecord>('POST', `/v1/sync${query}`);
  watching = false;
  await watch;
  progress.done();
  console.log(describeSwap(body));
  return body.result === 'ok' ? 0 : 1;
}

export async function rollbackCommand(values: FlagValues): Promise<number> {
  const call = await client(values);
  const { body } = await call<SwapRecord>('POST', '/v1/rollback');
  console.log(describeSwap(body));
  return body.result === 'ok' ? 0 : 1;
}

function table(rows: string[][]): string {
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length))) ?? [];
  return rows
    .map((r) =>
      r
        .map((c, i) => c.padEnd(widths[i] ?? 0))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

export async function statusCommand(values: FlagValues): Promise<number> {
  const call = await client(values);
  const { status, body } = await call<AgentStatus>('GET', '/v1/status');
  if (status !== 200) {
    console.error(`agent answered ${status}`);
    return 1;
  }
  if (values.json) {
    console.log(JSON.stringify(body, null, 2));
    return 0;
  }
  const s = body;
  const standby = s.standby
    ? `${s.standby.slot} (${s.standby.syncing ? 'mid-sync' : s.standby.seq === null ? 'unknown content' : `at change ${s.standby.seq}`})`
    : '-';
  console.log(
    [
      `epoch ${s.epoch}, slot ${s.mounted} mounted since ${s.publishedAt}`,
      `standby: ${standby}`,
      `pending changes: ${s.pendingChanges ?? 'unknown (next sync compares whole trees)'}${s.paused ? ' (automatic syncs paused by rollback)' : ''}`,
      `swapping: ${s.swapping ? `${s.swapping.kind}, ${s.swapping.phase}` : 'no'}`,
      ...(s.walks ?? []).map(
        (w) => `walking master: ${describeWalk(w, Date.now(), w.purpose === 'sync' ? s.swapping?.copied : undefined)}`,
      ),
      '',
      'servers:',
      s.servers.length === 0
        ? '  (none)'
        : table([
            ['  id', 'host', 'pid', 'epoch', 'mounted', 'in-flight a', 'in-flight b', 'state'],
            ...s.servers.map((h) => [
              `  ${h.id}`,
              h.host,
              String(h.pid),
              String(h.epoch),
              h.mounted ?? '-',
              String(h.inflight.a),
              String(h.inflight.b),
              h.live ? 'live' : 'stale',
            ]),
          ]),
      ...fleetLines(s.fleet),
      '',
      'last swaps:',
      s.lastSwaps.length === 0
        ? '  (none since the agent started)'
        : s.lastSwaps
            .slice(0, 5)
            .map((r) => describeSwap(r).replace(/^/gm, '  '))
            .join('\n'),
    ].join('\n'),
  );
  return 0;
}

/** A snapshot as status shows it: its first 8 characters (a UUID's first group), or '-' for none known. */
function snapshotName(id: string | null): string {
  return id ? id.slice(0, 8) : '-';
}

/** The fleet part of status: the committed epoch, the proposal under way and every host. */
function fleetLines(fleet: AgentStatus['fleet']): string[] {
  if (!fleet) return [];
  if ('error' in fleet) return ['', `fleet: cannot read it from etcd (${fleet.error})`];
  const who = fleet.coordinator.elected
    ? 'this agent is its coordinator'
    : `this agent is a standby coordinator${fleet.coordinator.holder ? ` (${fleet.coordinator.holder} is elected)` : ''}`;
  return [
    '',
    `fleet ${fleet.fleet}: ${who}; committed epoch ${fleet.epoch?.epoch ?? 'none'} (snapshot ${snapshotName(fleet.epoch?.snapshot ?? null)})${fleet.swap ? `; proposing epoch ${fleet.swap.epoch}` : ''}`,
    fleet.hosts.length === 0
      ? '  (no live host)'
      : table([
          ['  host', 'epoch', 'mounted', 'lag', 'ready', 'prepared', 'acked', 'slot a', 'slot b', 'last error'],
          ...fleet.hosts.map((h) => [
            `  ${h.host}`,
            String(h.epoch),
            h.mounted ?? '-',
            String(h.lag),
            h.ready ? 'yes' : 'no',
            h.prepared ? (h.prepared.ok ? 'ok' : 'failed') : '-',
            h.acked === null ? '-' : String(h.acked),
            snapshotName(h.slots.a),
            snapshotName(h.slots.b),
            h.lastError ?? '',
          ]),
        ]),
    ...(fleet.evicted.length > 0
      ? [`  evicted: ${fleet.evicted.map((e) => `${e.host} from epoch ${e.epoch} at ${e.at}`).join('; ')}`]
      : []),
  ];
}

export async function verifyCommand(values: FlagValues): Promise<number> {
  const call = await client(values);
  const progress = progressLine();
  progress.update('comparing master with the mounted slot…');
  const rate = new RecentRate();
  let watching = progress.shown;
  const watch = (async () => {
    while (watching) {
      await new Promise((r) => setTimeout(r, 200));
      const { body } = await call<AgentStatus>('GET', '/v1/status').catch(() => ({ body: null }));
      const walk = body?.walks?.find((w) => w.purpose === 'verify');
      if (walk && watching)
        progress.update(describeWalk(walk, Date.now(), undefined, rate.add(Date.now(), walk.entries)));
    }
  })();
  const answer = call<{ slot: string; epoch: number; differences: Difference[] }>('GET', '/v1/verify');
  const { status, body } = await answer.finally(() => {
    watching = false;
  });
  await watch;
  progress.done();
  if (status !== 200) {
    console.error(`agent answered ${status}`);
    return 1;
  }
  if (values.json) console.log(JSON.stringify(body, null, 2));
  else if (body.differences.length === 0) console.log(`slot ${body.slot} (epoch ${body.epoch}) mirrors master`);
  else {
    console.log(`slot ${body.slot} (epoch ${body.epoch}) differs from master in ${body.differences.length} places:`);
    for (const d of body.differences) console.log(`  ${d.kind.padEnd(8)} ${d.path}`);
  }
  return body.differences.length === 0 ? 0 : 1;
}
