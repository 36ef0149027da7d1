import http from 'node:http';
import https from 'node:https';
import type { AgentStatus, SwapRecord } from '../agent/agent.js';
import type { Difference } from '../tree/tree-copy.js';
import { releaseIdProblem } from '../store/epoch-file.js';
import { CLIENT_FLAGS, layoutFrom, readToken, tokenFileFor } from './common.js';
import { type FlagSpecs, type FlagValues, UsageError, stringFlag } from './flags.js';
import { RecentRate, describeProgress, describeWalk, progressLine } from './progress.js';

export const SYNC_FLAGS: FlagSpecs = {
  ...CLIENT_FLAGS,
  wait: { type: 'boolean', default: false, help: 'wait until the swap is done and print what it did' },
  full: { type: 'boolean', default: false, help: 'compare whole trees instead of using the change journal' },
  release: {
    type: 'string',
    arg: 'ID',
    help: 'name the release (a git SHA, a deployment id): shown in status, logs, metrics and the epoch file',
  },
};
export const STATUS_FLAGS: FlagSpecs = {
  ...CLIENT_FLAGS,
  json: { type: 'boolean', default: false, help: 'print JSON' },
  disk: {
    type: 'boolean',
    default: false,
    help: "each copy's disk bytes, shared with the other copies and its own (walks every copy)",
  },
};
export const ROLLBACK_FLAGS: FlagSpecs = {
  ...CLIENT_FLAGS,
  to: {
    type: 'string',
    arg: 'ID|EPOCH',
    help: 'mount this release (its id or epoch) again: with --keep above 2 any retained release, else only the one before the mounted one',
  },
};

/** A release id flag, checked here so a mistake is a usage error, not a round trip. */
function releaseFlag(values: FlagValues, name: string): string | undefined {
  const value = stringFlag(values, name);
  const problem = value === undefined ? null : releaseIdProblem(value);
  if (problem) throw new UsageError(`--${name}: ${problem}`);
  return value;
}
export const VERIFY_FLAGS: FlagSpecs = {
  ...CLIENT_FLAGS,
  json: { type: 'boolean', default: false, help: 'print JSON' },
};

type Call = <T>(method: string, path: string) => Promise<{ status: number; body: T }>;

/**
 * A small client of the agent's API with the token attached. Over node:http,
 * not fetch: fetch gives up on an answer whose headers take more than five
 * minutes, and `sync --wait` of a large tree, or a long drain, waits longer.
 */
async function client(values: FlagValues): Promise<Call> {
  const base = (stringFlag(values, 'agent') ?? 'http://127.0.0.1:7070').replace(/\/+$/, '');
  let url: URL;
  try {
    url = new URL(base);
  } catch {
    throw new UsageError(`--agent ${base}: must be a URL like http://127.0.0.1:7070`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:')
    throw new UsageError(`--agent ${base}: must be an http:// or https:// URL`);
  const token = await readToken(tokenFileFor(values, layoutFrom(values)));
  return async function call<T>(method: string, path: string): Promise<{ status: number; body: T }> {
    let answer: { status: number; text: string };
    try {
      answer = await request(new URL(`${base}${path}`), method, token);
    } catch (err) {
      throw new UsageError(`cannot reach the agent at ${base} (${(err as Error).message}); is it running? (--agent)`);
    }
    if (answer.status === 401) throw new UsageError('the agent refused the token (401); check --token-file');
    let body: T;
    try {
      body = JSON.parse(answer.text) as T;
    } catch {
      body = {} as T;
    }
    return { status: answer.status, body };
  };
}

/** One request, its whole answer as text; no deadline (the agent says when a swap is done). */
function request(url: URL, method: string, token: string): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = (url.protocol === 'https:' ? https : http).request(
      url,
      { method, headers: { authorization: `Bearer ${token}` } },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', reject);
        res.on('aborted', () => reject(new Error('the agent hung up mid-answer')));
      },
    );
    req.on('error', reject);
    req.end();
  });
}

/**
 * Run `work`; meanwhile, on a terminal only, poll the agent's status every
 * 200 ms and show what `describe` makes of it. The polling ends with
 * `work`, whether it succeeds or fails (an agent killed mid-sync must not
 * leave the command polling for ever).
 */
async function withStatusLine<T>(
  call: Call,
  first: string | null,
  describe: (status: AgentStatus, rate: RecentRate, elapsedSeconds: number) => string | null,
  work: () => Promise<T>,
): Promise<T> {
  const progress = progressLine();
  if (first) progress.update(first);
  const rate = new RecentRate();
  const started = Date.now();
  let watching = progress.shown;
  let wake: () => void = () => {};
  const watch = (async () => {
    while (watching) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 200);
        wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      if (!watching) break;
      const { body } = await call<AgentStatus>('GET', '/v1/status').catch(() => ({ body: null }));
      const text = body && watching ? describe(body, rate, (Date.now() - started) / 1000) : null;
      if (text) progress.update(text);
    }
  })();
  try {
    return await work();
  } finally {
    watching = false;
    wake();
    await watch;
    progress.done();
  }
}

/** A phase time, given in seconds, shown in milliseconds. */
const phaseMillis = (seconds: number | undefined) =>
  seconds === undefined ? '-' : `${(seconds * 1000).toFixed(1)} ms`;

function describeSwap(r: SwapRecord): string {
  const head = `${r.kind} to epoch ${r.epoch}${r.release === undefined ? '' : `, release ${r.release}`} (slot ${r.from} -> ${r.to}): ${r.result}`;
  const phases = `wait ${phaseMillis(r.phases.wait)}, copy ${phaseMillis(r.phases.copy)}, publish ${phaseMillis(r.phases.publish)}, drain ${phaseMillis(r.phases.drain)}`;
  const copied = `${r.mode} copy: ${r.copied.files} files, ${r.copied.bytes} bytes, ${r.copied.deleted} deleted`;
  // what master would not let the agent read: the copy left it as it was, every sync until it can
  const unreadable = r.copied.unreadable
    ? [
        `  cannot read ${r.copied.unreadable} entries of master (left as they were): ${(r.unreadable ?? []).slice(0, 5).join(', ')}`,
      ]
    : [];
  return [head, `  ${phases}`, `  ${copied}`, ...unreadable, ...(r.error ? [`  error: ${r.error.message}`] : [])].join(
    '\n',
  );
}

export async function syncCommand(values: FlagValues): Promise<number> {
  const call = await client(values);
  const release = releaseFlag(values, 'release');
  const query = `?wait=${values.wait ? 1 : 0}${values.full ? '&full=1' : ''}${release ? `&release=${encodeURIComponent(release)}` : ''}`;
  if (!values.wait) {
    const { status } = await call('POST', `/v1/sync${query}`);
    console.log(status === 202 ? 'sync requested' : `agent answered ${status}`);
    return status === 202 ? 0 : 1;
  }
  const { body } = await withStatusLine(
    call,
    null,
    (status, rate, elapsed) => {
      const s = status.swapping;
      const walk = status.walks?.find((w) => w.purpose === 'sync');
      if (s && walk) return describeWalk(walk, Date.now(), s.copied, rate.add(Date.now(), walk.entries));
      if (s?.copied) return describeProgress(`${s.kind}: ${s.phase}`, s.copied, elapsed);
      return s ? `${s.kind}: ${s.phase}…` : null;
    },
    () => call<SwapRecord>('POST', `/v1/sync${query}`),
  );
  console.log(describeSwap(body));
  return body.result === 'ok' ? 0 : 1;
}

type DiskUsage = Awaited<ReturnType<typeof import('../tree/copies-disk-usage.js').copiesDiskUsage>>;

const mib = (bytes: number) =>
  bytes < 2 ** 20 ? `${Math.round(bytes / 1024)} KiB` : `${(bytes / 2 ** 20).toFixed(1)} MiB`;

export async function rollbackCommand(values: FlagValues): Promise<number> {
  const call = await client(values);
  const to = releaseFlag(values, 'to');
  const { body } = await call<SwapRecord>('POST', `/v1/rollback${to ? `?to=${encodeURIComponent(to)}` : ''}`);
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
  const { status, body } = await call<AgentStatus & { disk?: DiskUsage }>(
    'GET',
    `/v1/status${values.disk ? '?disk=1' : ''}`,
  );
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
      `epoch ${s.epoch}${s.release === undefined ? '' : `, release ${s.release}`}, slot ${s.mounted} mounted since ${s.publishedAt}`,
      ...(s.previous && !(s.keep > 2)
        ? [
            `before it: epoch ${s.previous.epoch}${s.previous.release === undefined ? '' : `, release ${s.previous.release}`} (${s.previous.retained ? 'held by the standby: rollback mounts it again' : 'no longer held'})`,
          ]
        : []),
      ...(s.keep > 2
        ? [
            `retained (--keep ${s.keep}):${s.retained.length === 0 ? ' none yet' : ''}`,
            ...s.retained.map(
              (r) =>
                `  epoch ${r.epoch}${r.release === undefined ? '' : `, release ${r.release}`}: slot ${r.slot}, replaced ${r.ageSeconds} s ago, ${r.until ? `servable to pinned requests until ${r.until}` : 'servable until its copy is reused'}, ${r.inflight} in flight, served ${r.served.pinned} pinned and ${r.served.fallback} by fallback`,
            ),
          ]
        : []),
      `${s.keep > 2 ? 'next sync copies into' : 'standby'}: ${standby}`,
      ...(s.disk
        ? [
            `disk: ${mib(s.disk.total)} in all`,
            ...s.disk.copies.map(
              (c) =>
                `  slot ${c.name}: ${mib(c.bytes)} (${mib(c.shared)} shared with other copies, ${mib(c.owned)} its own)`,
            ),
          ]
        : []),
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
            [
              '  id',
              'host',
              'pid',
              'epoch',
              'mounted',
              ...(s.keep > 2 ? ['in-flight'] : ['in-flight a', 'in-flight b']),
              'state',
            ],
            ...s.servers.map((h) => [
              `  ${h.id}`,
              h.host,
              String(h.pid),
              String(h.epoch),
              h.mounted ?? '-',
              ...(s.keep > 2
                ? [
                    Object.entries(h.inflight)
                      .map(([slot, n]) => `${slot} ${n}`)
                      .join(', '),
                  ]
                : [String(h.inflight.a), String(h.inflight.b)]),
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
    ...((fleet.gone ?? []).length > 0
      ? [
          `  gone (lease ended; out of rotation until it registers again): ${(fleet.gone ?? [])
            .map((g) => `${g.host}${g.lastSeen ? ` (last seen ${g.lastSeen})` : ''}`)
            .join('; ')}`,
        ]
      : []),
  ];
}

export async function verifyCommand(values: FlagValues): Promise<number> {
  const call = await client(values);
  const { status, body } = await withStatusLine(
    call,
    'comparing master with the mounted slot…',
    (s, rate) => {
      const walk = s.walks?.find((w) => w.purpose === 'verify');
      return walk ? describeWalk(walk, Date.now(), undefined, rate.add(Date.now(), walk.entries)) : null;
    },
    () => call<{ slot: string; epoch: number; differences: Difference[] }>('GET', '/v1/verify'),
  );
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
