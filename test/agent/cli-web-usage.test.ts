import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { type CliProcess, runCli } from '../../testkit/proc.js';
import { freePort } from '../../testkit/server.js';
import { type TempStore, tempStore } from '../../testkit/store.js';

/**
 * README, "The agent and the CLI": "A bad value exits with status 2 and a
 * message naming the flag." `serve` and `up` take the web server's flags;
 * `up` starts the agent too, so a bad web-server flag, or a web listener it
 * cannot take, must end the whole process rather than leave the agent running.
 */

/** The exit code, or 'hung' when the process is still running after `ms` (it is then killed). */
async function exitWithin(p: CliProcess, ms: number): Promise<number | null | 'hung'> {
  let timer: NodeJS.Timeout | undefined;
  const hung = new Promise<'hung'>((resolve) => {
    timer = setTimeout(() => resolve('hung'), ms);
  });
  const code = await Promise.race([p.exited(), hung]);
  clearTimeout(timer);
  if (code === 'hung') await p.kill('SIGKILL');
  return code;
}

describe('serve and up: a bad web-server flag is a usage error naming the flag', () => {
  let store: TempStore;
  before(async () => {
    store = await tempStore();
  });
  after(async () => {
    await store.dispose();
  });

  const badValues: [string, string][] = [
    ['--release-header', 'ETag'],
    ['--server-id', '.hidden'],
    ['--pin-query', ''],
  ];

  for (const [flag, value] of badValues) {
    it(`serve ${flag} ${JSON.stringify(value)}: exit 2, the message names ${flag}`, async () => {
      const port = await freePort();
      const p = runCli(['serve', '--store', store.root, '--listen', `127.0.0.1:${port}`, flag, value]);
      const code = await exitWithin(p, 15_000);
      assert.equal(code, 2, p.output());
      assert.match(p.output(), new RegExp(`^mirrorswap serve: ${flag} `, 'm'), p.output());
    });
  }

  for (const args of [
    ['--release-header', 'ETag'],
    ['--cache-rule', 'no-equals-sign'],
    ['--watch', 'sometimes'],
  ]) {
    it(`up ${args.join(' ')}: exits 2 naming the flag, and leaves no agent running`, async () => {
      const [agentPort, webPort] = [await freePort(), await freePort()];
      const p = runCli([
        'up',
        '--store',
        store.root,
        '--listen',
        `127.0.0.1:${agentPort}`,
        '--serve-listen',
        `127.0.0.1:${webPort}`,
        ...args,
      ]);
      const code = await exitWithin(p, 20_000);
      assert.equal(code, 2, p.output());
      assert.match(p.output(), new RegExp(`^mirrorswap up: ${args[0]} `, 'm'), p.output());
      assert.doesNotMatch(p.output(), /\n\s+at /, 'no stack trace');
    });
  }

  it('up whose web listener is taken exits (the agent does not keep running alone)', async () => {
    const taken = createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    const webPort = (taken.address() as { port: number }).port;
    try {
      const agentPort = await freePort();
      const p = runCli([
        'up',
        '--store',
        store.root,
        '--listen',
        `127.0.0.1:${agentPort}`,
        '--serve-listen',
        `127.0.0.1:${webPort}`,
      ]);
      const code = await exitWithin(p, 20_000);
      assert.notEqual(code, 'hung', p.output());
      assert.notEqual(code, 0, p.output());
      assert.match(p.output(), /EADDRINUSE/, p.output());
    } finally {
      taken.close();
    }
  });
});
