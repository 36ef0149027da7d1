import { execFile } from 'node:child_process';
import { readFile, readdir, readlink } from 'node:fs/promises';
import { readSmallFile } from '../store/read-small-file.js';

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
  // a pid file left by a dead nginx may name a pid the kernel gave to anyone since
  return (await isAlive(pid)) && (await isTrustedMaster(pid)) ? pid : null;
}

/**
 * Whether `pid` is an nginx master this companion may signal and whose binary
 * and options it may run `nginx -t` with: its title says so, and it runs as
 * root or as the companion's own user. A process of another user can set any
 * title; trusting it would let that user pick the binary a root companion
 * runs, or have an unrelated process signalled.
 */
export async function isTrustedMaster(pid: number): Promise<boolean> {
  const raw = await rawCmdline(pid);
  // its title, or (a build that keeps its arguments) a program named nginx
  const named = /^nginx: master process/.test(raw) || /(^|\/)nginx$/.test(raw.split('\0')[0] ?? '');
  if (!named) return false;
  let status: string;
  try {
    status = await readFile(`/proc/${pid}/status`, 'utf8');
  } catch {
    return false;
  }
  // every uid of the process (real, effective, saved, file system) is root's or ours
  const uids = /^Uid:\s+(.*)$/m.exec(status)?.[1]?.trim().split(/\s+/).map(Number) ?? [];
  const own = process.getuid?.() ?? 0;
  return uids.length > 0 && uids.every((uid) => uid === 0 || uid === own);
}

/** Whether `pid` runs: not gone, not a zombie (exited, not yet reaped). */
export async function isAlive(pid: number): Promise<boolean> {
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

/** /proc/PID/cmdline as it is: NUL-separated arguments, or one string once a process set its title. */
async function rawCmdline(pid: number): Promise<string> {
  try {
    return (await readFile(`/proc/${pid}/cmdline`, 'utf8')).replace(/\0+$/, '');
  } catch {
    return '';
  }
}

/** The command line as one line of text: the process title, for telling masters and workers apart. */
async function cmdline(pid: number): Promise<string> {
  return (await rawCmdline(pid)).replace(/\0/g, ' ');
}

/** nginx's own options (nginx -h): those that take a value, and those that do not. */
const VALUE_OPTIONS = new Set(['c', 'e', 'g', 'p', 's']);
const BARE_OPTIONS = new Set(['?', 'h', 'v', 'V', 't', 'T', 'q']);

/** Whether an argument is one of nginx's options, as nginx's own parser reads it. */
function isNginxOption(arg: string): boolean {
  if (arg.length < 2 || arg[0] !== '-') return false;
  for (const ch of arg.slice(1)) {
    if (VALUE_OPTIONS.has(ch)) return true; // the rest, or the next argument, is its value
    if (!BARE_OPTIONS.has(ch)) return false;
  }
  return true;
}

/** The options nginx was started with that take a value, by letter (the last one given wins, as in nginx). */
export type NginxOptions = Partial<Record<'c' | 'e' | 'g' | 'p' | 's', string>>;

/**
 * Read nginx's options from its arguments with nginx's own grammar: bare
 * options may be grouped (`-tq`); an option that takes a value takes the rest
 * of its argument (`-cFILE`) or the next one. `exact` says argument
 * boundaries are known (a NUL-separated command line); when they are not (a
 * master's title, where nginx joined its arguments with spaces), a value runs
 * on to the next word that is an nginx option, so `-g "daemon off;"` or a
 * path with a space is read whole.
 */
export function parseNginxArgs(args: string[], exact: boolean): NginxOptions {
  const out: NginxOptions = {};
  for (let i = 0; i < args.length; i++) {
    const arg = args[i] as string;
    if (!isNginxOption(arg)) continue;
    for (let j = 1; j < arg.length; j++) {
      const ch = arg[j] as string;
      if (!VALUE_OPTIONS.has(ch)) continue;
      const words: string[] = [];
      const rest = arg.slice(j + 1);
      if (rest) words.push(rest);
      else if (i + 1 < args.length) words.push(args[++i] as string);
      if (!exact) while (i + 1 < args.length && !isNginxOption(args[i + 1] as string)) words.push(args[++i] as string);
      out[ch as keyof NginxOptions] = words.join(' ');
      break;
    }
  }
  return out;
}

/**
 * The options nginx's master `pid` was started with. nginx replaces its
 * command line with its title ("nginx: master process /usr/sbin/nginx -c …"),
 * so /proc/PID/cmdline is one string then; without a title (a build that
 * keeps its arguments) it is NUL-separated, and each argument is exact.
 */
export async function masterOptions(pid: number): Promise<NginxOptions> {
  const raw = await rawCmdline(pid);
  const parts = raw.split('\0');
  if (parts.length > 1) return parseNginxArgs(parts.slice(1), true);
  const title = raw.replace(/^nginx: master process\s+/, '');
  // the first word is the binary nginx was started as
  return parseNginxArgs(title.split(' ').filter(Boolean).slice(1), false);
}

const isWorkerTitle = (title: string) => /^nginx: worker process/.test(title);

/** Whether `pid` is still an nginx worker (a pid reused by another process is not). */
export async function isWorker(pid: number): Promise<boolean> {
  return (await isAlive(pid)) && isWorkerTitle(await cmdline(pid));
}

/**
 * How long ago `pid` started, in ms: its start in clock ticks since boot
 * (/proc/PID/stat, at Linux's USER_HZ of 100) against /proc/uptime.
 * Infinity when either cannot be read.
 */
export async function ageOf(pid: number): Promise<number> {
  try {
    const [stat, uptime] = await Promise.all([readFile(`/proc/${pid}/stat`, 'utf8'), readFile('/proc/uptime', 'utf8')]);
    const ticks = Number(fieldsAfterName(stat)[19]);
    const up = Number(uptime.split(' ')[0]);
    return Number.isFinite(ticks) && Number.isFinite(up) ? up * 1000 - ticks * 10 : Number.POSITIVE_INFINITY;
  } catch {
    return Number.POSITIVE_INFINITY;
  }
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
 * The arguments of `nginx -t` that check the configuration the way the
 * running master reads it: its prefix (-p), file (-c) and directives (-g).
 * Its error log (-e) is sent to stderr for the check, where the reason is
 * read (and no log file is opened by the check): only when the master was
 * given -e, so an nginx older than that option is never handed it.
 */
export function configTestArgs(options: NginxOptions): string[] {
  const args = ['-t'];
  if (options.p !== undefined) args.push('-p', options.p);
  if (options.c !== undefined) args.push('-c', options.c);
  if (options.g !== undefined) args.push('-g', options.g);
  if (options.e !== undefined) args.push('-e', 'stderr');
  return args;
}

/**
 * Ask nginx to check its configuration as the running master was started
 * (its binary, working directory and options), to say why a reload was
 * refused. Returns nginx's own words, or null when the check passes.
 */
export async function configProblem(master: number): Promise<string | null> {
  // the binary and options run are the master's own: only ever those of a master we trust
  if (!(await isTrustedMaster(master))) return null;
  let exe: string;
  let cwd: string | undefined;
  try {
    exe = await readlink(`/proc/${master}/exe`);
    // relative -p and -c are read from where nginx was started
    cwd = await readlink(`/proc/${master}/cwd`).catch(() => undefined);
  } catch {
    return null;
  }
  const args = configTestArgs(await masterOptions(master));
  return new Promise((resolve) => {
    execFile(exe, args, { timeout: 10_000, cwd }, (err, _stdout, stderr) => {
      if (!err) resolve(null);
      else {
        const lines = stderr.split('\n').filter((l) => /\[(emerg|alert|crit|error)\]/.test(l));
        resolve((lines.join('; ') || stderr.trim() || err.message).slice(0, 2000));
      }
    });
  });
}

/** Every running nginx master on this host this companion may trust (`isTrustedMaster`). */
export async function runningMasters(): Promise<number[]> {
  const masters: number[] = [];
  for (const name of await readdir('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    if (await isTrustedMaster(Number(name))) masters.push(Number(name));
  }
  return masters;
}

/**
 * The running nginx master that a reload command addresses, when no pid file
 * names one: the master started with the configuration file (`-c`) the
 * command names, or the only master when neither names one. Null when none
 * or more than one could be meant.
 */
export async function masterNamedBy(reloadCmd: string): Promise<number | null> {
  // the command's own configuration, read by nginx's grammar (`-c FILE` and `-cFILE` alike)
  const confOfCmd = parseNginxArgs(reloadCmd.split(/\s+/).filter(Boolean).slice(1), true).c;
  const masters = await runningMasters();
  if (confOfCmd === undefined) return masters.length === 1 ? (masters[0] as number) : null;
  const matches: number[] = [];
  for (const pid of masters) if ((await masterOptions(pid)).c === confOfCmd) matches.push(pid);
  return matches.length === 1 ? (matches[0] as number) : null;
}
