import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import pino from 'pino';
import { DEFAULT_STORE, type StoreLayout, storeLayout } from '../store/store-layout.js';
import { type FlagSpecs, type FlagValues, UsageError, stringFlag } from './flags.js';

export const STORE_FLAGS: FlagSpecs = {
  store: { type: 'string', env: 'MIRRORSWAP_STORE', default: DEFAULT_STORE, arg: 'DIR', help: 'the store directory' },
};

export const CLIENT_FLAGS: FlagSpecs = {
  ...STORE_FLAGS,
  agent: {
    type: 'string',
    env: 'MIRRORSWAP_AGENT',
    default: 'http://127.0.0.1:7070',
    arg: 'URL',
    help: 'where the agent listens',
  },
  'token-file': {
    type: 'string',
    env: 'MIRRORSWAP_TOKEN_FILE',
    arg: 'FILE',
    help: 'file holding the API token (default: <store>/state/token if present)',
  },
};

export function layoutFrom(values: FlagValues): StoreLayout {
  return storeLayout(stringFlag(values, 'store') ?? DEFAULT_STORE);
}

export function makeLogger(level = process.env.MIRRORSWAP_LOG_LEVEL ?? 'info') {
  return pino({ name: 'mirrorswap', level, base: { pid: process.pid } });
}

/** The token the write API requires; never logged. */
export async function readToken(file: string, flag = 'token-file'): Promise<string> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new UsageError(
      `--${flag} ${file}: cannot read it (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`,
    );
  }
  const token = text.trim();
  if (token.length < 16) throw new UsageError(`--${flag} ${file}: the token must be at least 16 characters`);
  const st = await stat(file);
  if ((st.mode & 0o077) !== 0) {
    process.emitWarning(`${file} is readable by group or others; chmod 600 it`, { code: 'MIRRORSWAP_TOKEN_MODE' });
  }
  return token;
}

/** The token file a client command uses: the flag, else the one `mirrorswap up` writes. */
export function tokenFileFor(values: FlagValues, layout: StoreLayout): string {
  return stringFlag(values, 'token-file') ?? join(layout.stateDir, 'token');
}
