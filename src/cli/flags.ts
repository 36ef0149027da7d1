import { parseArgs } from 'node:util';
import ms from 'ms';

/** A usage error: printed with the command's help hint, exit status 2. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

export interface FlagSpec {
  type: 'string' | 'boolean';
  /** Environment variable that supplies the flag when it is not given; the flag wins. */
  env?: string;
  default?: string | boolean;
  help: string;
  /** Placeholder shown in help, e.g. DIR or DURATION. */
  arg?: string;
  /**
   * A string flag that may be given more than once: its values are joined
   * by newlines (its environment twin gives one value a line).
   */
  multiple?: boolean;
}

export type FlagSpecs = Record<string, FlagSpec>;
export type FlagValues = Record<string, string | boolean | undefined>;

/** Parse argv against the specs; environment twins fill gaps; unknown flags are errors naming the flag. */
export function parseFlags(argv: string[], specs: FlagSpecs, env: NodeJS.ProcessEnv = process.env): FlagValues {
  const options: Record<string, { type: 'string' | 'boolean'; multiple?: boolean }> = {};
  for (const [name, spec] of Object.entries(specs)) {
    options[name] = spec.multiple ? { type: spec.type, multiple: true } : { type: spec.type };
  }
  options.help = { type: 'boolean' };
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({ args: argv, options, allowPositionals: false, strict: true, allowNegative: true });
  } catch (err) {
    throw new UsageError((err as Error).message.replace(/^TypeError \[[A-Z_]+\]: /, ''));
  }
  const values: FlagValues = { help: parsed.values.help as boolean | undefined };
  for (const [name, spec] of Object.entries(specs)) {
    const given = parsed.values[name] as string | boolean | string[] | undefined;
    let value = Array.isArray(given) ? given.join('\n') : given;
    if (value === undefined && spec.env !== undefined && env[spec.env] !== undefined && env[spec.env] !== '') {
      const raw = env[spec.env] as string;
      if (spec.type === 'boolean') {
        if (!/^(1|0|true|false|yes|no)$/i.test(raw)) {
          throw new UsageError(`${spec.env}=${raw}: must be true or false (it sets --${name})`);
        }
        value = /^(1|true|yes)$/i.test(raw);
      } else {
        value = raw;
      }
    }
    values[name] = value ?? spec.default;
  }
  return values;
}

/** A duration flag ("30s", "5m", "250ms", or plain milliseconds) in milliseconds. */
export function durationFlag(values: FlagValues, name: string, { min = 0 }: { min?: number } = {}): number | undefined {
  const raw = values[name];
  if (raw === undefined) return undefined;
  const millis = /^\d+$/.test(String(raw)) ? Number(raw) : ms(String(raw) as ms.StringValue);
  if (typeof millis !== 'number' || !Number.isFinite(millis) || millis < min) {
    throw new UsageError(
      `--${name} ${String(raw)}: must be a duration like 250ms, 30s or 5m${min > 0 ? ` (at least ${min} ms)` : ''}`,
    );
  }
  return millis;
}

const SIZE_UNITS: Record<string, number> = {
  '': 1,
  b: 1,
  k: 1024,
  kb: 1024,
  kib: 1024,
  m: 1024 ** 2,
  mb: 1024 ** 2,
  mib: 1024 ** 2,
  g: 1024 ** 3,
  gb: 1024 ** 3,
  gib: 1024 ** 3,
};

/**
 * A size flag ("64MiB", "512k", or bytes), in whole bytes. Zero only with `zero` (where it means
 * "no floor"); a fraction that comes to less than a byte is refused, never read as 0.
 */
export function sizeFlag(
  values: FlagValues,
  name: string,
  { zero = false }: { zero?: boolean } = {},
): number | undefined {
  const raw = values[name];
  if (raw === undefined) return undefined;
  const m = /^(\d+(?:\.\d+)?)\s*([a-z]*)$/i.exec(String(raw));
  const unit = m ? SIZE_UNITS[(m[2] ?? '').toLowerCase()] : undefined;
  const bytes = m && unit !== undefined ? Math.floor(Number(m[1]) * unit) : Number.NaN;
  if (!(bytes > 0 || (zero && Number(m?.[1]) === 0))) {
    throw new UsageError(
      `--${name} ${String(raw)}: must be a size of at least one byte${zero ? ' (or 0)' : ''}, like 1048576, 512KiB or 64MiB`,
    );
  }
  return bytes;
}

/** A whole-number flag within `min`..`max`. */
export function integerFlag(values: FlagValues, name: string, min: number, max: number): number | undefined {
  const raw = values[name];
  if (raw === undefined) return undefined;
  const n = /^\d+$/.test(String(raw)) ? Number(raw) : Number.NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    throw new UsageError(`--${name} ${String(raw)}: must be a whole number from ${min} to ${max}`);
  }
  return n;
}

/** A comma-separated list flag (`a,b,c`), blanks dropped. */
export function listFlag(values: FlagValues, name: string): string[] | undefined {
  const raw = values[name];
  if (typeof raw !== 'string') return undefined;
  return raw
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');
}

/** Milliseconds as a flag value: the largest whole unit ("10m", "30s", "250ms"), so help shows what one would type. */
export function formatDuration(millis: number): string {
  if (millis === 0) return '0';
  for (const [unit, size] of [
    ['h', 3_600_000],
    ['m', 60_000],
    ['s', 1000],
  ] as const) {
    if (millis > 0 && millis % size === 0) return `${millis / size}${unit}`;
  }
  return `${millis}ms`;
}

/** Bytes as a flag value: the largest whole binary unit ("64MiB", "512KiB", "100"). */
export function formatSize(bytes: number): string {
  for (const [unit, size] of [
    ['GiB', 1024 ** 3],
    ['MiB', 1024 ** 2],
    ['KiB', 1024],
  ] as const) {
    if (bytes > 0 && bytes % size === 0) return `${bytes / size}${unit}`;
  }
  return String(bytes);
}

/** A HOST:PORT flag. */
export function listenFlag(values: FlagValues, name: string): { host: string; port: number } {
  const raw = String(values[name] ?? '');
  const m = /^(?:\[([0-9a-f:]+)\]|([^:]+)):(\d{1,5})$/i.exec(raw);
  const port = m ? Number(m[3]) : Number.NaN;
  if (!m || port > 65535)
    throw new UsageError(`--${name} ${raw}: must be HOST:PORT, like 127.0.0.1:7070 or [::1]:7070`);
  return { host: (m[1] ?? m[2]) as string, port };
}

export function stringFlag(values: FlagValues, name: string): string | undefined {
  const v = values[name];
  return typeof v === 'string' ? v : undefined;
}

/** The help text of a command, flags with their environment twins and defaults. */
export function helpText(usage: string, summary: string, specs: FlagSpecs): string {
  const lines = [`usage: ${usage}`, '', summary, '', 'options:'];
  for (const [name, spec] of Object.entries(specs)) {
    const flag =
      spec.type === 'string' ? `--${name} ${spec.arg ?? 'VALUE'}${spec.multiple ? ' ...' : ''}` : `--${name}`;
    const extras = [
      spec.env ? `env ${spec.env}` : '',
      spec.default !== undefined ? `default ${String(spec.default)}` : '',
    ]
      .filter(Boolean)
      .join('; ');
    lines.push(`  ${flag.padEnd(28)} ${spec.help}${extras ? ` (${extras})` : ''}`);
  }
  lines.push(`  ${'--help'.padEnd(28)} show this help`);
  return `${lines.join('\n')}\n`;
}
