import { execFile } from 'node:child_process';
import { readFile, readdir, readlink } from 'node:fs/promises';
import { readSmallFile } from '../read-small-file.js';

/**
 * What the companion reads of a running nginx, from /proc: its master's pid,
 * the master's worker processes, and whether a given worker still lives.
 * Workers are told apart by their process title ("nginx: worker process",
 * "... is shutting down" once a reload retired them); cache managers and
 * loaders serve no request and are left out.
 */

/** The master's pid from nginx's pid file; null when there is none (nginx not running). */
export async function readMasterPid(pidFile: string): Promise<number | null> {
  // read without blocking: a FIFO or a device put where the pid file goes must not hang the companion
  let bytes: Buffer | null;
  try {
    bytes = await readSmallFile(pidFile, 64);
  } catch {
    return null; // not a regular file, or unreadable: no master is named
  }
  const pid = Number(bytes?.toString('utf8').trim());
  if (!Number.isInteger(pid) || pid <= 1) return null;
  return (await isAlive(pid)) ? pid : null;
}

async function isAlive(pid: number): Promise<boolean> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    // a zombie has exited: it serves nothing
    return stateOf(stat) !== 'Z';
  } catch {
    return false;
  }
}

/** Fields of /proc/PID/stat after the command name, which may itself hold spaces and parentheses. */
function fieldsAfterName(stat: string): string[] {
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
}

function stateOf(stat: string): string {
  return fieldsAfterName(stat)[0] ?? '';
}

async function cmdline(pid: number): Promise<string> {
  try {
    return (await readFile(`/proc/${pid}/cmdline`, 'utf8')).replace(/\0+$/, '').replace(/\0/g, ' ');
  } catch {
    return '';
  }
}

const isWorkerTitle = (title: string) => /^nginx: worker process/.test(title);

/** Whether `pid` is still an nginx worker (a pid reused by another process is not). */
export async function isWorker(pid: number): Promise<boolean> {
  return (await isAlive(pid)) && isWorkerTitle(await cmdline(pid));
}

/** The worker processes whose parent is `master`. */
export async function workersOf(master: number): Promise<number[]> {
  let children: number[];
  try {
    // every thread of the master (nginx has one) lists the children it started
    const tasks = await readdir(`/proc/${master}/task`);
    children = [];
    for (const task of tasks) {
      const text = await readFile(`/proc/${master}/task/${task}/children`, 'utf8').catch(() => '');
      for (const pid of text.trim().split(/\s+/)) if (pid) children.push(Number(pid));
    }
  } catch {
    children = await childrenByScan(master);
  }
  const workers: number[] = [];
  for (const pid of children) if (await isWorker(pid)) workers.push(pid);
  return workers;
}

/** Children of `parent` by reading every process's parent (kernels without /proc/PID/task/TID/children). */
async function childrenByScan(parent: number): Promise<number[]> {
  const out: number[] = [];
  for (const name of await readdir('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const stat = await readFile(`/proc/${name}/stat`, 'utf8').catch(() => '');
    if (stat && Number(fieldsAfterName(stat)[1]) === parent) out.push(Number(name));
  }
  return out;
}

/**
 * Ask nginx to check its configuration as the running master was started
 * (its binary and the -c, -p and -g it was given), to say why a reload was
 * refused. Returns nginx's own words, or null when the check passes.
 */
export async function configProblem(master: number): Promise<string | null> {
  let exe: string;
  try {
    exe = await readlink(`/proc/${master}/exe`);
  } catch {
    return null;
  }
  // "nginx: master process /usr/sbin/nginx -c /etc/nginx/nginx.conf -g daemon off;"
  const args = (await cmdline(master)).replace(/^nginx: master process\s+\S+\s*/, '');
  const flags: string[] = [];
  const re = /(-[cpg])\s+(.+?)(?=\s+-[cpg]\s|$)/g;
  for (let m = re.exec(args); m; m = re.exec(args)) flags.push(m[1] as string, m[2] as string);
  return new Promise((resolve) => {
    execFile(exe, ['-t', ...flags], { timeout: 10_000 }, (err, _stdout, stderr) => {
      if (!err) resolve(null);
      else {
        const lines = stderr.split('\n').filter((l) => /\[(emerg|alert|crit|error)\]/.test(l));
        resolve((lines.join('; ') || stderr.trim() || err.message).slice(0, 2000));
      }
    });
  });
}

/**
 * The running nginx master that a reload command addresses, when no pid file
 * names one: the master started with the configuration file (`-c`) the
 * command names, or the only master when neither names one. Null when none
 * or more than one could be meant.
 */
export async function masterNamedBy(reloadCmd: string): Promise<number | null> {
  const tokens = reloadCmd.split(/\s+/);
  const confOfCmd = tokens[tokens.indexOf('-c') + 1];
  const matches: number[] = [];
  const masters: number[] = [];
  for (const name of await readdir('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const title = await cmdline(Number(name));
    if (!/^nginx: master process/.test(title)) continue;
    masters.push(Number(name));
    const conf = /\s-c\s+(\S+)/.exec(title)?.[1];
    if (conf !== undefined && confOfCmd !== undefined && conf === confOfCmd) matches.push(Number(name));
  }
  if (confOfCmd !== undefined && tokens.includes('-c')) return matches.length === 1 ? (matches[0] as number) : null;
  return masters.length === 1 ? (masters[0] as number) : null;
}
