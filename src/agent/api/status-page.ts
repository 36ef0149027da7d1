/**
 * The agent's status page (GET /): one self-contained HTML document, no build
 * step and no external assets. It holds no data: the browser asks /v1/status
 * with the token the operator types (kept in sessionStorage), so the page
 * shows nothing to someone without the token. Every value is written with
 * textContent, never as HTML, so a hostile server id cannot inject markup.
 */
export function statusPage(nonce: string): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>mirrorswap status</title>
<style nonce="${nonce}">
  body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5rem; color: #1d2330; background: #f7f8fa; }
  h1 { font-size: 1.3rem; margin: 0 0 1rem; }
  h2 { font-size: 1rem; margin: 1.5rem 0 .5rem; }
  .cards { display: flex; gap: 1rem; flex-wrap: wrap; }
  .card { background: #fff; border: 1px solid #d9dde5; border-radius: 6px; padding: .75rem 1rem; min-width: 10rem; }
  .card b { display: block; font-size: 1.4rem; }
  table { border-collapse: collapse; background: #fff; width: 100%; }
  th, td { border: 1px solid #d9dde5; padding: .3rem .6rem; text-align: left; }
  th { background: #eef0f4; }
  .stale { color: #a33; }
  .ok { color: #176b32; }
  .failed, .drain_timeout { color: #a33; }
  #auth, #actions { margin: .5rem 0 1rem; display: flex; gap: .5rem; align-items: center; }
  #message { min-height: 1.2rem; }
  button { padding: .35rem .9rem; }
</style>
</head>
<body>
<h1>mirrorswap</h1>
<form id="auth"><label>API token <input id="token" type="password" autocomplete="off" size="40"></label><button type="submit">Show status</button></form>
<div id="message" role="status"></div>
<div id="status" hidden>
  <div class="cards">
    <div class="card">epoch<b id="epoch">-</b></div>
    <div class="card">mounted slot<b id="mounted">-</b></div>
    <div class="card">standby<b id="standby">-</b></div>
    <div class="card">pending changes<b id="pending">-</b></div>
    <div class="card">swap under way<b id="swapping">-</b></div>
  </div>
  <div id="actions"><button id="sync" type="button">Sync now</button><button id="rollback" type="button">Roll back</button></div>
  <section id="releases" hidden>
  <h2>Retained releases (keep <span id="keep"></span>)</h2>
  <table><thead><tr><th>slot</th><th>epoch</th><th>release</th><th>replaced</th><th>servable until</th><th>in flight</th><th>served pinned</th><th>served by fallback</th></tr></thead><tbody id="retained"></tbody></table>
  <p><button id="disk" type="button">Disk use of the copies</button> <span id="disk-total"></span></p>
  <table id="disk-table" hidden><thead><tr><th>copy</th><th>bytes</th><th>shared with other copies</th><th>its own</th></tr></thead><tbody id="copies"></tbody></table>
  </section>
  <h2>Servers</h2>
  <table><thead><tr><th>id</th><th>host</th><th>pid</th><th>kind</th><th>epoch</th><th>mounted</th><th>in flight a</th><th>in flight b</th><th>in flight, other copies</th><th>state</th></tr></thead><tbody id="servers"></tbody></table>
  <section id="fleet" hidden>
  <h2>Fleet <span id="fleet-name"></span></h2>
  <p id="fleet-summary"></p>
  <table><thead><tr><th>host</th><th>epoch</th><th>mounted</th><th>lag</th><th>ready</th><th>prepared</th><th>acked</th><th>slot a</th><th>slot b</th><th>last error</th></tr></thead><tbody id="hosts"></tbody></table>
  </section>
  <h2>Recent swaps</h2>
  <table><thead><tr><th>started</th><th>kind</th><th>epoch</th><th>slots</th><th>result</th><th>copy</th><th>wait</th><th>copy time</th><th>prepare</th><th>publish</th><th>drain</th></tr></thead><tbody id="swaps"></tbody></table>
</div>
<script nonce="${nonce}">
(() => {
  const $ = (id) => document.getElementById(id);
  let token = sessionStorage.getItem('mirrorswap-token') || '';
  let timer;
  const ms = (s) => (s === undefined ? '-' : (s * 1000).toFixed(1) + ' ms');
  const row = (cells, cls) => {
    const tr = document.createElement('tr');
    for (const c of cells) { const td = document.createElement('td'); td.textContent = String(c); tr.append(td); }
    if (cls) tr.className = cls;
    return tr;
  };
  const say = (text) => { $('message').textContent = text; };
  async function call(method, path) {
    const res = await fetch(path, { method, headers: { authorization: 'Bearer ' + token } });
    if (res.status === 401) { sessionStorage.removeItem('mirrorswap-token'); throw new Error('the token was refused'); }
    return { status: res.status, body: await res.json() };
  }
  function render(s) {
    $('status').hidden = false;
    $('epoch').textContent = s.epoch;
    $('mounted').textContent = s.mounted;
    $('standby').textContent = s.standby ? s.standby.slot + (s.standby.syncing ? ' (mid-sync)' : s.standby.seq === null ? ' (unknown)' : ' (ready)') : '-';
    $('pending').textContent = (s.pendingChanges === null ? 'unknown' : s.pendingChanges) + (s.paused ? ' (paused)' : '');
    $('swapping').textContent = (s.swapping ? s.swapping.kind + ': ' + s.swapping.phase : 'no') + (s.walks || []).map((w) => '; ' + w.purpose + ' walking master against slot ' + w.slot + ': ' + w.entries + (w.expected ? ' of ~' + w.expected + ' entries (' + Math.min(99, Math.floor(100 * w.entries / w.expected)) + '%)' : ' entries')).join('');
    const others = (inflight) => Object.entries(inflight).filter(([slot, n]) => slot !== 'a' && slot !== 'b' && n > 0).map(([slot, n]) => slot + ': ' + n).join(', ') || '-';
    $('servers').replaceChildren(...s.servers.map((h) => row([h.id, h.host, h.pid, h.kind, h.epoch, h.mounted ?? '-', h.inflight.a, h.inflight.b, others(h.inflight), h.live ? 'live' : 'stale'], h.live ? '' : 'stale')));
    const retained = s.retained || [];
    $('releases').hidden = !(s.keep > 2 || retained.length > 0);
    $('keep').textContent = s.keep;
    $('retained').replaceChildren(...retained.map((r) => row([r.slot, r.epoch, r.release ?? '-', r.ageSeconds + ' s ago', r.until ?? 'until its copy is reused', r.inflight, r.served ? r.served.pinned : '-', r.served ? r.served.fallback : '-'])));
    const f = s.fleet;
    $('fleet').hidden = !f;
    if (f && f.error) $('fleet-summary').textContent = 'cannot read the fleet from etcd: ' + f.error;
    else if (f) {
      $('fleet-name').textContent = f.fleet;
      $('fleet-summary').textContent = (f.coordinator.elected ? 'this agent is the coordinator' : 'standby coordinator (' + (f.coordinator.holder || 'none') + ' is elected)') + '; committed epoch ' + (f.epoch ? f.epoch.epoch : 'none') + (f.swap ? '; proposing epoch ' + f.swap.epoch : '') + (f.evicted.length ? '; evicted: ' + f.evicted.map((e) => e.host + ' (epoch ' + e.epoch + ')').join(', ') : '') + (f.gone && f.gone.length ? '; gone (out of rotation): ' + f.gone.map((g) => g.host).join(', ') : '');
      $('hosts').replaceChildren(...f.hosts.map((h) => row([h.host, h.epoch, h.mounted ?? '-', h.lag, h.ready ? 'yes' : 'no', h.prepared ? (h.prepared.ok ? 'ok' : 'failed: ' + h.prepared.error) : '-', h.acked ?? '-', (h.slots.a || '-').slice(0, 8), (h.slots.b || '-').slice(0, 8), h.lastError ?? ''], h.ready ? '' : 'stale')));
    }
    $('swaps').replaceChildren(...s.lastSwaps.map((r) => row([r.startedAt, r.kind, r.epoch, r.from + ' → ' + r.to, r.result + (r.error ? ': ' + r.error.message : ''), r.copied.files + ' files, ' + r.copied.bytes + ' B', ms(r.phases.wait), ms(r.phases.copy), ms(r.phases.prepare), ms(r.phases.publish), ms(r.phases.drain)], r.result)));
  }
  async function refresh() {
    try { render((await call('GET', '/v1/status')).body); } catch (err) { say(err.message); $('status').hidden = true; clearInterval(timer); }
  }
  function start() { clearInterval(timer); refresh(); timer = setInterval(refresh, 1000); }
  async function act(path, label) {
    say(label + '…');
    try {
      const { body } = await call('POST', path);
      say(label + ': ' + body.result + (body.error ? ' (' + body.error.message + ')' : '') + ', epoch ' + body.epoch);
      refresh();
    } catch (err) { say(err.message); }
  }
  $('auth').addEventListener('submit', (e) => { e.preventDefault(); token = $('token').value.trim(); sessionStorage.setItem('mirrorswap-token', token); say(''); start(); });
  $('sync').addEventListener('click', () => act('/v1/sync?wait=1', 'sync'));
  $('rollback').addEventListener('click', () => act('/v1/rollback', 'rollback'));
  // on demand only: it walks every copy
  $('disk').addEventListener('click', async () => {
    say('disk use…');
    try {
      const { body } = await call('GET', '/v1/status?disk=1');
      const mib = (n) => (n / 1048576).toFixed(1) + ' MiB';
      $('copies').replaceChildren(...body.disk.copies.map((c) => row([c.name, mib(c.bytes), mib(c.shared), mib(c.owned)])));
      $('disk-table').hidden = false;
      $('disk-total').textContent = 'all copies: ' + mib(body.disk.total) + ' (each file once)';
      say('');
    } catch (err) { say(err.message); }
  });
  if (token) start();
})();
</script>
</body>
</html>
`;
}
