/**
 * Run `mirrorswap agent` on a random loopback port and print the port, for the
 * sync benchmark: `node sync-agent-target.js <cli> <store> <token-file>`; prints `<port> <agent pid>`.
 */
import { spawn } from 'node:child_process';

const [cli, store, tokenFile] = process.argv.slice(2) as [string, string, string];
const child = spawn(
  process.execPath,
  [cli, 'agent', '--store', store, '--listen', '127.0.0.1:0', '--token-file', tokenFile, '--max-body', '16MiB'],
  {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, MIRRORSWAP_LOG_LEVEL: 'info' },
  },
);
let printed = false;
child.stdout.on('data', (d: Buffer) => {
  for (const line of d.toString().split('\n')) {
    if (!printed && line.includes('"agent listening"')) {
      printed = true;
      // the port, then the agent's own pid (its memory is what the benchmark reports)
      console.log(`${new URL((JSON.parse(line) as { url: string }).url).port} ${child.pid}`);
    }
  }
});
process.on('SIGTERM', () => child.kill('SIGTERM'));
child.on('exit', (code) => process.exit(code ?? 0));
