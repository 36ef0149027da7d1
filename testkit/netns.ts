import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';

/**
 * Machines of one network on this one: a Linux bridge in this namespace
 * (`bridgeIp`, where etcd and the bench listen) and `count` network
 * namespaces on it, each joined by a veth pair whose two ends are shaped by
 * `tc` to `rateMbit` (the node's uplink and its downlink). A process run
 * `through` node i has only that link: bytes between two nodes cross both
 * their links, as between two machines on a switch. Needs root and
 * iproute2 (`ip`, `tc`); `remove()` undoes all of it. One at a time on a
 * machine (its subnet is 10.79.0.0/16); where br_netfilter and a FORWARD
 * policy of DROP (Docker's) filter bridged traffic, the nodes cannot reach
 * each other.
 */
export class NetLinks {
  readonly bridgeIp: string;
  readonly rateMbit: number;
  readonly #prefix: string;
  readonly #count: number;

  private constructor(prefix: string, count: number, rateMbit: number) {
    this.#prefix = prefix;
    this.#count = count;
    this.rateMbit = rateMbit;
    this.bridgeIp = '10.79.0.1';
  }

  /** The bridge and `count` nodes (at most 250) with links of `rateMbit`. */
  static create(count: number, rateMbit: number): NetLinks {
    if (count > 250) throw new Error('NetLinks: at most 250 nodes');
    const used = execFileSync('ip', ['-o', 'addr', 'show', 'to', '10.79.0.0/16']).toString().trim();
    if (used !== '') throw new Error(`NetLinks: 10.79.0.0/16 is in use here already (another run?): ${used}`);
    // short and unique: interface names have at most 15 characters
    const links = new NetLinks(`ms${randomBytes(2).toString('hex')}`, count, rateMbit);
    try {
      links.#setUp();
    } catch (err) {
      links.remove();
      throw err;
    }
    return links;
  }

  /** Node i's address. */
  ip(i: number): string {
    return `10.79.1.${i + 1}`;
  }

  /** A `RunOptions.through` that runs a command in node i's namespace. */
  through(i: number): string {
    return `exec ip netns exec ${this.#ns(i)} "$@"`;
  }

  /** Remove the namespaces and the bridge (their veth pairs go with them); idempotent. */
  remove(): void {
    for (let i = 0; i < this.#count; i++) {
      run('ip', ['netns', 'del', this.#ns(i)], true);
      // a pair whose end never reached its namespace stays here: deleting one end deletes both
      run('ip', ['link', 'del', `${this.#prefix}v${i}`], true);
    }
    run('ip', ['link', 'del', this.#bridge], true);
  }

  get #bridge(): string {
    return `${this.#prefix}br`;
  }

  #ns(i: number): string {
    return `${this.#prefix}n${i}`;
  }

  #setUp(): void {
    const shape = (dev: string) => [
      'qdisc',
      'add',
      'dev',
      dev,
      'root',
      'tbf',
      'rate',
      `${this.rateMbit}mbit`,
      'burst',
      '256kb',
      'latency',
      '50ms',
    ];
    run('ip', ['link', 'add', this.#bridge, 'type', 'bridge']);
    run('ip', ['addr', 'add', `${this.bridgeIp}/16`, 'dev', this.#bridge]);
    run('ip', ['link', 'set', this.#bridge, 'up']);
    for (let i = 0; i < this.#count; i++) {
      const ns = this.#ns(i);
      const outside = `${this.#prefix}v${i}`;
      const inside = `${this.#prefix}p${i}`;
      run('ip', ['netns', 'add', ns]);
      run('ip', ['link', 'add', outside, 'type', 'veth', 'peer', 'name', inside]);
      run('ip', ['link', 'set', inside, 'netns', ns]);
      run('ip', ['link', 'set', outside, 'master', this.#bridge, 'up']);
      run('ip', ['-n', ns, 'addr', 'add', `${this.ip(i)}/16`, 'dev', inside]);
      run('ip', ['-n', ns, 'link', 'set', inside, 'up']);
      run('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
      // the bridge's side sends to the node (its downlink); the node's side sends out (its uplink)
      run('tc', shape(outside));
      run('ip', ['netns', 'exec', ns, 'tc', ...shape(inside)]);
    }
  }
}

function run(command: string, args: string[], ignoreFailure = false): void {
  try {
    execFileSync(command, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (err) {
    if (!ignoreFailure) {
      const stderr = (err as { stderr?: Buffer }).stderr?.toString().trim();
      throw new Error(`${command} ${args.join(' ')} failed: ${stderr || (err as Error).message}`);
    }
  }
}
