import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MOUNT_DEFAULTS, STATIC_DEFAULTS } from '../../../middleware/defaults.js';
import { AGENT_DEFAULTS, API_DEFAULTS } from '../../../src/agent/agent-defaults.js';
import { SWAP_FLAGS, agentOptions } from '../../../src/cli/agent-flags.js';
import { AGENT_FLAGS } from '../../../src/cli/commands/agent.js';
import { SERVE_FLAGS } from '../../../src/cli/commands/serve.js';
import { UP_FLAGS } from '../../../src/cli/commands/up.js';
import { describeProgress } from '../../../src/cli/progress.js';
import {
  UsageError,
  durationFlag,
  formatDuration,
  formatSize,
  helpText,
  listenFlag,
  parseFlags,
  sizeFlag,
} from '../../../src/cli/flags.js';
import { staticOptions } from '../../../src/cli/serve-flags.js';
import { resolveCacheRules } from '../../../middleware/static/cache-rules.js';
import { variantSettings } from '../../../src/agent/variant-settings.js';
import { storeLayout } from '../../../src/store/store-layout.js';

const quiet = { info() {}, warn() {}, error() {} };

describe('flag parsing', () => {
  it('takes a flag, then its environment twin, then the default; the flag wins', () => {
    const specs = { settle: { type: 'string' as const, env: 'X_SETTLE', default: '1s', help: '' } };
    assert.equal(parseFlags([], specs, {}).settle, '1s');
    assert.equal(parseFlags([], specs, { X_SETTLE: '2s' }).settle, '2s');
    assert.equal(parseFlags(['--settle', '3s'], specs, { X_SETTLE: '2s' }).settle, '3s');
    // an empty twin is no value at all
    assert.equal(parseFlags([], specs, { X_SETTLE: '' }).settle, '1s');
  });

  it('reads boolean twins strictly, and --no-X turns a flag off', () => {
    const specs = { auto: { type: 'boolean' as const, env: 'X_AUTO', default: false, help: '' } };
    assert.equal(parseFlags([], specs, { X_AUTO: 'yes' }).auto, true);
    assert.equal(parseFlags([], specs, { X_AUTO: 'FALSE' }).auto, false);
    assert.throws(() => parseFlags([], specs, { X_AUTO: 'maybe' }), /X_AUTO=maybe: must be true or false/);
    assert.equal(parseFlags(['--no-auto'], specs, { X_AUTO: '1' }).auto, false);
  });

  it('refuses unknown flags and positionals as usage errors naming them', () => {
    const specs = { store: { type: 'string' as const, help: '' } };
    assert.throws(
      () => parseFlags(['--stroe', 'x'], specs, {}),
      (err: Error) => {
        return err instanceof UsageError && /--stroe/.test(err.message);
      },
    );
    assert.throws(() => parseFlags(['stray'], specs, {}), UsageError);
  });

  it('reads durations in units or plain milliseconds, and refuses nonsense and values under the minimum', () => {
    assert.equal(durationFlag({ d: '250ms' }, 'd'), 250);
    assert.equal(durationFlag({ d: '30s' }, 'd'), 30_000);
    assert.equal(durationFlag({ d: '5m' }, 'd'), 300_000);
    assert.equal(durationFlag({ d: '1500' }, 'd'), 1500);
    assert.equal(durationFlag({}, 'd'), undefined);
    assert.throws(() => durationFlag({ d: 'soon' }, 'd'), /--d soon: must be a duration/);
    assert.throws(() => durationFlag({ d: '-1s' }, 'd'), UsageError);
    assert.throws(() => durationFlag({ d: '50ms' }, 'd', { min: 100 }), /at least 100 ms/);
  });

  it('reads sizes in binary units and refuses zero and unknown units', () => {
    assert.equal(sizeFlag({ s: '64MiB' }, 's'), 64 * 1024 * 1024);
    assert.equal(sizeFlag({ s: '512k' }, 's'), 512 * 1024);
    assert.equal(sizeFlag({ s: '100' }, 's'), 100);
    assert.throws(() => sizeFlag({ s: '0' }, 's'), UsageError);
    assert.throws(() => sizeFlag({ s: '5 parsecs' }, 's'), UsageError);
  });

  it('a size that comes to less than a byte is refused, not read as 0; --variant-min-size takes 0 (every file)', () => {
    for (const tiny of ['0.5', '0.0001k'])
      assert.throws(
        () => sizeFlag({ 'max-body': tiny }, 'max-body'),
        (err: unknown) => err instanceof UsageError && /--max-body/.test((err as Error).message),
        tiny,
      );
    const agentFlags = (...argv: string[]) =>
      agentOptions(parseFlags(argv, AGENT_FLAGS, {}), storeLayout('/tmp/x'), quiet);
    assert.equal(agentFlags('--variant-min-size', '0').variantMinSize, 0);
    assert.equal(agentFlags('--variant-min-size', '2KiB').variantMinSize, 2048);
    assert.throws(
      () => agentFlags('--variant-min-size', '0.5'),
      (err: unknown) => err instanceof UsageError && /--variant-min-size/.test((err as Error).message),
    );
  });

  it('reads HOST:PORT, IPv6 in brackets, and refuses a port out of range', () => {
    assert.deepEqual(listenFlag({ l: '127.0.0.1:7070' }, 'l'), { host: '127.0.0.1', port: 7070 });
    assert.deepEqual(listenFlag({ l: '[::1]:0' }, 'l'), { host: '::1', port: 0 });
    assert.throws(() => listenFlag({ l: '127.0.0.1:70000' }, 'l'), UsageError);
    assert.throws(() => listenFlag({ l: '7070' }, 'l'), UsageError);
  });

  it('formats durations and sizes so that they read back to the same value', () => {
    for (const millis of [0, 1, 250, 1000, 1500, 30_000, 600_000, 3_600_000, 5_400_000]) {
      assert.equal(durationFlag({ d: formatDuration(millis) }, 'd'), millis, formatDuration(millis));
    }
    for (const bytes of [1, 1000, 1024, 512 * 1024, 64 * 1024 * 1024, 3 * 1024 ** 3]) {
      assert.equal(sizeFlag({ s: formatSize(bytes) }, 's'), bytes, formatSize(bytes));
    }
  });
});

describe('defaults: one table per component', () => {
  it("the agent's flags, left unset, give exactly the agent's default table", () => {
    const values = parseFlags([], AGENT_FLAGS, {});
    const opts = agentOptions(values, storeLayout('/tmp/x'), quiet);
    assert.equal(opts.drainTimeoutMs, AGENT_DEFAULTS.drainTimeoutMs);
    assert.equal(opts.serverTtlMs, AGENT_DEFAULTS.serverTtlMs);
    assert.equal(opts.settleMs, AGENT_DEFAULTS.settleMs);
    assert.equal(opts.verifyIntervalMs, AGENT_DEFAULTS.verifyIntervalMs);
    assert.equal(opts.auto, AGENT_DEFAULTS.auto);
    assert.equal(opts.watchMaster, AGENT_DEFAULTS.watchMaster);
    assert.equal(opts.durable, AGENT_DEFAULTS.durable);
    assert.equal(opts.intervalMs, undefined, 'no interval unless asked');
    assert.equal(opts.variantThreads, AGENT_DEFAULTS.variantThreads);
    assert.equal(sizeFlag(values, 'max-body'), API_DEFAULTS.maxBodyBytes);
    assert.equal(values.listen, API_DEFAULTS.listen);
  });

  it('--variant-threads caps the threads that compress, 0 for all; nonsense is a usage error', () => {
    const agentFlags = (...argv: string[]) =>
      agentOptions(parseFlags(argv, AGENT_FLAGS, {}), storeLayout('/tmp/x'), quiet);
    assert.equal(variantSettings({ ...AGENT_DEFAULTS, ...agentFlags('--variant-threads', '1') })?.threads, 1);
    assert.equal(variantSettings({ ...AGENT_DEFAULTS, ...agentFlags() })?.threads, 0);
    for (const bad of ['-1', 'two', '1.5'])
      assert.throws(
        () => agentFlags('--variant-threads', bad),
        (err: unknown) => err instanceof UsageError && /--variant-threads/.test((err as Error).message),
      );
  });

  it('--variant-types and --variant-encodings refuse a list that names nothing, or names what never matches', () => {
    const agentFlags = (argv: string[], env: NodeJS.ProcessEnv = {}) =>
      agentOptions(parseFlags(argv, AGENT_FLAGS, env), storeLayout('/tmp/x'), quiet);
    // what they take: extensions with or without their dot, any case; codings in any order
    assert.deepEqual(agentFlags(['--variant-types', '.JS, css,svg']).variantTypes, ['.JS', 'css', 'svg']);
    assert.deepEqual(agentFlags(['--variant-encodings', 'gzip']).variantEncodings, ['gzip']);
    const refused = (argv: string[], flag: string, fix: RegExp, env: NodeJS.ProcessEnv = {}) =>
      assert.throws(
        () => agentFlags(argv, env),
        (err: unknown) => err instanceof UsageError && err.message.includes(flag) && fix.test(err.message),
        `${argv.join(' ')} ${JSON.stringify(env)}`,
      );
    // a list naming nothing compressed nothing (types) or turned variants and the index off (codings),
    // silently: what --no-variants says out loud
    for (const empty of ['', ',', ' , ']) refused(['--variant-types', empty], '--variant-types', /--no-variants/);
    refused([], '--variant-types', /--no-variants/, { MIRRORSWAP_VARIANT_TYPES: ',' });
    for (const empty of ['', ',']) refused(['--variant-encodings', empty], '--variant-encodings', /--no-variants/);
    // with variants off, a list naming nothing does nothing either: taken, as Agent.start takes it (a
    // unit file clearing the lists beside --no-variants must start)
    const off = agentFlags(['--no-variants', '--variant-encodings', '', '--variant-types', ',']);
    assert.equal(off.variants, false);
    assert.deepEqual([off.variantEncodings, off.variantTypes], [[], []]);
    const offByEnv = agentFlags([], { MIRRORSWAP_VARIANTS: 'false', MIRRORSWAP_VARIANT_TYPES: ',' });
    assert.deepEqual([offByEnv.variants, offByEnv.variantTypes], [false, []]);
    // what is named is still checked: a glob is never an extension, on or off
    refused(['--no-variants', '--variant-types', '*.js'], '--variant-types', /extension/);
    // a type is one extension: a glob, a path, a name with a dot inside can never be a file's extension
    for (const never of ['*.js', 'tar.gz', 'js css', 'assets/js', '.'])
      refused(['--variant-types', `html,${never}`], '--variant-types', /extension/);
    // bounded as the agent's options are: each copy records its selection and reads it back at every sync
    refused(['--variant-types', `html,${'x'.repeat(33)}`], '--variant-types', /longer than 32 characters/);
    const many = Array.from({ length: 257 }, (_, i) => `t${i}`).join(',');
    refused(['--variant-types', many], '--variant-types', /257 types: at most 256/);
    assert.equal(agentFlags(['--variant-types', `${'x'.repeat(32)},css`]).variantTypes?.length, 2);
  });

  it("the web server's flags, left unset, give exactly the middleware's default table", () => {
    const opts = staticOptions(parseFlags([], SERVE_FLAGS, {}), storeLayout('/tmp/x'), quiet);
    assert.equal(opts.watch, MOUNT_DEFAULTS.watch);
    assert.equal(opts.pollInterval, MOUNT_DEFAULTS.pollInterval);
    assert.equal(opts.heartbeatInterval, MOUNT_DEFAULTS.heartbeatInterval);
    assert.equal(opts.maxAge, STATIC_DEFAULTS.maxAge);
    assert.equal(opts.precompressed, STATIC_DEFAULTS.precompressed);
    assert.equal(opts.etag, STATIC_DEFAULTS.etag);
    assert.equal(opts.cacheRules, undefined);
  });

  it('--cache-rule is repeatable (its twin one rule a line), --etag and --no-precompressed', () => {
    const layout = storeLayout('/tmp/x');
    const opts = staticOptions(
      parseFlags(
        [
          '--cache-rule',
          're:\\.[0-9a-f]{8}\\.js$=public, max-age=31536000, immutable',
          '--cache-rule',
          '*.html = no-cache',
          '--etag',
          'weak',
          '--no-precompressed',
        ],
        SERVE_FLAGS,
        {},
      ),
      layout,
      quiet,
    );
    assert.deepEqual(opts.cacheRules, [
      { match: /\.[0-9a-f]{8}\.js$/, cacheControl: 'public, max-age=31536000, immutable' },
      { match: '*.html', cacheControl: 'no-cache' },
    ]);
    assert.equal(opts.etag, 'weak');
    assert.equal(opts.precompressed, false);
    const fromEnv = staticOptions(
      parseFlags([], SERVE_FLAGS, { MIRRORSWAP_CACHE_RULES: '*.css=no-store\n/a/**=private', MIRRORSWAP_ETAG: 'off' }),
      layout,
      quiet,
    );
    assert.deepEqual(fromEnv.cacheRules, [
      { match: '*.css', cacheControl: 'no-store' },
      { match: '/a/**', cacheControl: 'private' },
    ]);
    assert.equal(fromEnv.etag, false);
    for (const bad of [
      ['--cache-rule', 'no-equals'],
      ['--cache-rule', '=x'],
      ['--cache-rule', 're:(=x'],
      ['--etag', 'strong'],
    ]) {
      assert.throws(() => staticOptions(parseFlags(bad, SERVE_FLAGS, {}), layout, quiet), UsageError, bad.join(' '));
    }
  });

  it('--cache-rule: a rule the middleware would refuse, or one that can match nothing or everything by mistake, is a usage error naming the flag and the rule', () => {
    const layout = storeLayout('/tmp/x');
    for (const line of [
      '[abc=no-cache', // unclosed set: was a TypeError of the middleware's, naming cacheRules[0], not the flag
      '{js,css=no-cache',
      'a\\=no-cache', // an = written \= belongs to the pattern: no value
      ' =no-cache', // a pattern of blanks
      '*.html=n\u00f6-cache', // not a header value
      '*.html=  ', // a value of blanks
      're:=no-cache', // an empty RegExp matches every path
      '/assets/=public, max-age=60', // a glob ending in a slash matches no file
    ]) {
      assert.throws(
        () => staticOptions(parseFlags(['--cache-rule', line], SERVE_FLAGS, {}), layout, quiet),
        (err: unknown) =>
          err instanceof UsageError &&
          err.message.startsWith(`--cache-rule ${line}:`) &&
          !/cacheRules\[/.test(err.message),
        line,
      );
    }
    // a pattern's own = is written \= (a glob and a RegExp both read \= as =): the first = not so
    // written ends the pattern
    const escaped = staticOptions(
      parseFlags(['--cache-rule', '/a\\=b.js=no-cache', '--cache-rule', 're:^/q\\=\\d+$=max-age=60'], SERVE_FLAGS, {}),
      layout,
      quiet,
    ).cacheRules as { match: string | RegExp; cacheControl: string }[];
    assert.equal(escaped[0]?.match, '/a\\=b.js');
    assert.equal(
      String((escaped[1] as { match: RegExp }).match.source),
      String.raw`^\/q\=\d+$`,
      'the RegExp as written',
    );
    assert.deepEqual(
      escaped.map((r) => r.cacheControl),
      ['no-cache', 'max-age=60'],
    );
    const resolved = resolveCacheRules(escaped);
    assert.equal(resolved[0]?.test('/a=b.js'), true, 'the glob matches the file named with =');
    assert.equal(resolved[1]?.test('/q=12'), true, 'the RegExp matches the path with =');
    // the first = not written \= ends the pattern, a RegExp's too: what follows it, = and all, is the value
    assert.deepEqual(
      staticOptions(parseFlags(['--cache-rule', 're:^/a=b=public, max-age=60'], SERVE_FLAGS, {}), layout, quiet)
        .cacheRules,
      [{ match: /^\/a/, cacheControl: 'b=public, max-age=60' }],
    );
  });

  it('help shows each default as the table holds it', () => {
    const help = helpText('mirrorswap agent', 'the agent', AGENT_FLAGS);
    assert.match(
      help,
      new RegExp(`--drain-timeout DURATION.*default ${formatDuration(AGENT_DEFAULTS.drainTimeoutMs)}\\)`),
    );
    assert.match(help, /--verify-interval DURATION.*default 10m\)/);
    assert.match(help, /--max-body SIZE.*default 64MiB\)/);
    assert.match(help, /--drain-timeout DURATION.*env MIRRORSWAP_DRAIN_TIMEOUT/);
  });

  it('up differs from agent only where it says so (--auto on)', () => {
    assert.equal(parseFlags([], UP_FLAGS, {}).auto, true);
    assert.equal(parseFlags([], SWAP_FLAGS, {}).auto, AGENT_DEFAULTS.auto);
  });
});

describe('progress line', () => {
  it('shows files, bytes, rates, and an ETA once the total is known', () => {
    const line = describeProgress('slot b', { files: 500, bytes: 50 * 1048576, totalBytes: 200 * 1048576 }, 10);
    assert.equal(line, 'slot b: 500 files, 50.0 MiB, 50 files/s, 5.0 MiB/s, 25%, ETA 30s');
    const long = describeProgress('full', { files: 10, bytes: 1048576, totalBytes: 200 * 1048576 }, 1);
    assert.match(long, /ETA 3m19s$/);
    assert.equal(describeProgress('slot a', { files: 3, bytes: 0 }, 0), 'slot a: 3 files, 0.0 MiB');
    assert.equal(
      describeProgress('slot a', { files: 500, bytes: 50 * 1048576, totalBytes: 200 * 1048576, totalFiles: 2000 }, 10),
      'slot a: 500 of 2000 files, 50.0 MiB, 50 files/s, 5.0 MiB/s, 25%, ETA 30s',
    );
  });
});
