import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Registry } from 'prom-client';
import { registerCoordinatorMetrics } from '../../src/fleet/coordinator/coordinator-metrics.js';
import { registerHostMetrics } from '../../src/fleet/host/host-metrics.js';
import { type TestAgent, startTestAgent } from '../../testkit/agent.js';
import { type TestApp, startApp } from '../../testkit/app.js';
import { CLI } from '../../testkit/proc.js';
import { freePort } from '../../testkit/server.js';
import { type TempStore, tempStore } from '../../testkit/store.js';
import { run, tool } from '../../testkit/tools.js';
import { waitFor } from '../../testkit/wait.js';

/** The fleet's metrics, as a coordinator and a host agent export them (empty: no fleet runs here). */
function fleetMetricsText(): Promise<string> {
  const registry = new Registry();
  registerCoordinatorMetrics(registry, async () => null);
  registerHostMetrics(registry, () => null);
  return registry.metrics();
}

const DEPLOY = fileURLToPath(new URL('../../../deploy/', import.meta.url));

describe('systemd units', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'mirrorswap-units-'));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  // the nginx companion runs as root: it signals nginx's master and reads its workers in /proc
  for (const [unit, maxExposure] of [
    ['mirrorswap-agent.service', 2.5],
    ['mirrorswap-serve.service', 2.5],
    ['mirrorswap-nginx.service', 3.0],
    ['mirrorswap-host.service', 2.5],
  ] as const) {
    it(`${unit} passes systemd-analyze verify and keeps its exposure at ${maxExposure} or below`, async () => {
      const analyze = tool('systemd-analyze', 'systemd');
      // verify checks that ExecStart exists: point it at this checkout's CLI
      const text = (await readFile(join(DEPLOY, 'systemd', unit), 'utf8')).replaceAll(
        '/usr/bin/mirrorswap',
        `${process.execPath} ${CLI}`,
      );
      const file = join(dir, unit);
      await writeFile(file, text);
      const verify = run(analyze, ['verify', file]);
      assert.equal(verify.code, 0, verify.output);
      const security = run(analyze, ['security', '--offline=true', file]);
      const level = Number(/Overall exposure level for .*?: ([\d.]+)/.exec(security.output)?.[1]);
      assert.ok(level <= maxExposure, `exposure ${level}:\n${security.output}`);
    });
  }
});

describe('Prometheus configuration', () => {
  const dir = join(DEPLOY, 'prometheus');

  it('promtool accepts the scrape config and the rules', () => {
    const promtool = tool('promtool', 'prometheus');
    for (const args of [
      ['check', 'config', 'prometheus.yml'],
      ['check', 'rules', 'mirrorswap.rules.yml'],
    ]) {
      const r = run(promtool, args, dir);
      assert.equal(r.code, 0, r.output);
    }
  });

  it('every alert passes its unit tests, firing and not firing', () => {
    const r = run(tool('promtool', 'prometheus'), ['test', 'rules', 'mirrorswap.rules.test.yml'], dir);
    assert.equal(r.code, 0, r.output);
    const rules = run('sh', ['-c', `grep -c '^      - alert:' ${join(dir, 'mirrorswap.rules.yml')}`]).output.trim();
    const tested = new Set(
      run('sh', ['-c', `grep 'alertname:' ${join(dir, 'mirrorswap.rules.test.yml')}`]).output.match(/Mirrorswap\w+/g),
    );
    assert.equal(tested.size, Number(rules), 'an alert has no unit test');
  });

  it('the rules refer only to metrics the project exports', async () => {
    const store = await tempStore();
    const agent = await startTestAgent(store);
    const app = await startApp({ store: store.root });
    try {
      const exported = new Set<string>();
      for (const text of [
        await (await agent.call('GET', '/metrics', { auth: false })).text(),
        await app.mw.registry.metrics(),
        await fleetMetricsText(),
      ]) {
        for (const m of text.matchAll(/^# TYPE (\S+)/gm)) exported.add(m[1] as string);
      }
      const rules = await readFile(join(dir, 'mirrorswap.rules.yml'), 'utf8');
      const used = new Set(rules.match(/mirrorswap_[a-z_]+/g));
      for (const name of used) assert.ok(exported.has(name), `${name} is not exported`);
    } finally {
      await app.close();
      await agent.close();
      await store.dispose();
    }
  });
});

describe('a real Prometheus scraping a running agent and web server', () => {
  let store: TempStore;
  let agent: TestAgent;
  let app: TestApp;
  let prometheus: ChildProcess;
  let promUrl: string;
  let dir: string;

  before(async () => {
    const binary = tool('prometheus', 'prometheus');
    store = await tempStore();
    await store.fill('master', { 'index.html': 'v1' });
    agent = await startTestAgent(store);
    app = await startApp({ store: store.root, heartbeatInterval: 100 });
    dir = await mkdtemp(join(tmpdir(), 'mirrorswap-prom-'));
    const port = await freePort();
    promUrl = `http://127.0.0.1:${port}`;
    await writeFile(
      join(dir, 'prometheus.yml'),
      [
        'global: { scrape_interval: 1s, evaluation_interval: 1s }',
        'scrape_configs:',
        `  - job_name: agent\n    static_configs: [{ targets: ['${new URL(agent.url).host}'] }]`,
        `  - job_name: servers\n    static_configs: [{ targets: ['${new URL(app.url).host}'] }]`,
        '',
      ].join('\n'),
    );
    prometheus = spawn(
      binary,
      [
        `--config.file=${join(dir, 'prometheus.yml')}`,
        `--storage.tsdb.path=${join(dir, 'data')}`,
        `--web.listen-address=127.0.0.1:${port}`,
      ],
      {
        stdio: 'ignore',
      },
    );
    await waitFor('Prometheus to be ready', async () => (await fetch(`${promUrl}/-/ready`)).ok, {
      timeout: 30_000,
      step: 100,
    });
  });
  after(async () => {
    prometheus?.kill('SIGTERM');
    await new Promise((r) => (prometheus?.exitCode !== null ? r(null) : prometheus.once('exit', r)));
    await app?.close();
    await agent?.close();
    await store?.dispose();
    await rm(dir, { recursive: true, force: true });
  });

  const query = async (q: string): Promise<number | null> => {
    const res = (await (await fetch(`${promUrl}/api/v1/query?query=${encodeURIComponent(q)}`)).json()) as {
      data: { result: { value: [number, string] }[] };
    };
    const v = res.data.result[0]?.value[1];
    return v === undefined ? null : Number(v);
  };

  it('sees the swap counter and the new epoch of both agent and server after a swap', async () => {
    await waitFor('a first scrape of both', async () => (await query('count(up == 1)')) === 2, {
      timeout: 30_000,
      step: 200,
    });
    await agent.call('PUT', '/v1/files/index.html', { body: 'v2' });
    const res = await agent.call('POST', '/v1/sync?wait=1');
    assert.equal(res.status, 200);
    await waitFor(
      'the swap counter in Prometheus',
      async () => (await query('mirrorswap_agent_swaps_total{result="ok",kind="sync"}')) === 1,
      {
        timeout: 30_000,
        step: 200,
      },
    );
    await waitFor(
      'the new epoch from the agent and the server',
      async () => {
        const agentEpoch = await query('mirrorswap_agent_epoch');
        const serverEpoch = await query('mirrorswap_server_epoch');
        return agentEpoch === 2 && serverEpoch === 2;
      },
      { timeout: 30_000, step: 200 },
    );
  });
});

describe('Grafana dashboard', () => {
  it('is a valid dashboard whose every query names only metrics the project exports', async () => {
    const dash = JSON.parse(await readFile(join(DEPLOY, 'grafana', 'mirrorswap-dashboard.json'), 'utf8')) as {
      title: string;
      uid: string;
      schemaVersion: number;
      panels: {
        id: number;
        type: string;
        title: string;
        gridPos: { w: number; h: number };
        targets: { refId: string; expr: string }[];
      }[];
    };
    assert.equal(typeof dash.title, 'string');
    assert.equal(typeof dash.uid, 'string');
    assert.ok(dash.schemaVersion >= 30);
    const ids = new Set(dash.panels.map((p) => p.id));
    assert.equal(ids.size, dash.panels.length, 'panel ids must be unique');
    const store = await tempStore();
    const agent = await startTestAgent(store);
    const app = await startApp({ store: store.root });
    const { mirrorProxy } = await import('../../middleware/proxy/mirror-proxy.js');
    const proxy = mirrorProxy({
      store: store.root,
      upstreams: { a: 'http://127.0.0.1:9', b: 'http://127.0.0.1:9' },
      serverId: 'dash-proxy',
    });
    try {
      const exported = new Set<string>();
      for (const text of [
        await (await agent.call('GET', '/metrics', { auth: false })).text(),
        await app.mw.registry.metrics(),
        await proxy.registry.metrics(),
        await fleetMetricsText(),
      ]) {
        for (const m of text.matchAll(/^# TYPE (\S+) (\S+)/gm)) {
          exported.add(m[1] as string);
          if (m[2] === 'histogram') for (const s of ['_bucket', '_sum', '_count']) exported.add(`${m[1]}${s}`);
        }
      }
      for (const panel of dash.panels) {
        assert.ok(['timeseries', 'stat'].includes(panel.type), `panel ${panel.id}: type ${panel.type}`);
        assert.ok(panel.gridPos.w > 0 && panel.gridPos.h > 0, `panel ${panel.id}: gridPos`);
        assert.ok(panel.targets.length > 0, `panel ${panel.id} has no query`);
        for (const t of panel.targets) {
          for (const name of t.expr.match(/mirrorswap_[a-z_]+/g) ?? [])
            assert.ok(exported.has(name), `panel "${panel.title}": ${name} is not exported`);
        }
      }
      const covered = dash.panels.flatMap((p) => p.targets.map((t) => t.expr)).join(' ');
      for (const needed of [
        'mirrorswap_server_epoch',
        'mirrorswap_agent_swaps_total',
        'mirrorswap_agent_swap_phase_seconds_bucket',
        'mirrorswap_server_inflight_requests',
        'mirrorswap_agent_pending_changes',
        'mirrorswap_server_requests_total',
        'mirrorswap_fleet_host_lag',
        'mirrorswap_fleet_evictions_total',
        'mirrorswap_host_ready',
      ]) {
        assert.ok(covered.includes(needed), `the dashboard does not show ${needed}`);
      }
    } finally {
      await proxy.close();
      await app.close();
      await agent.close();
      await store.dispose();
    }
  });
});
