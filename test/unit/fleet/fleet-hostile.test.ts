import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { chmod, lstat, mkdir, readFile, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import type { IncomingMessage } from 'node:http';
import { type AddressInfo, createServer as createNetServer } from 'node:net';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { readFile as readText } from 'node:fs/promises';
import { MAX_PATHS_PER_REQUEST, frameHeader } from '../../../src/fleet/coordinator/fleet-api.js';
import { PULL_LIMITS } from '../../../src/tree/fleet-limits.js';
import type { ManifestEntry } from '../../../src/tree/manifest.js';
import { FrameReader, type PullOptions, pullSnapshot } from '../../../src/fleet/host/pull.js';
import { Readable } from 'node:stream';
import { ENTRY_FIELDS, Pace, parseFrameHeader } from '../../../src/fleet/host/pull-checks.js';
import { WritableDirs } from '../../../src/tree/writable-dirs.js';
import { tempDirs } from '../../../testkit/store.js';
import { type StubHandler, pathsAsked, stubCoordinator } from '../../../testkit/stub-coordinator.js';
import { flood } from '../../../testkit/flood.js';
import { within } from '../../../testkit/wait.js';

// A coordinator is the source of truth for content, not for where a host writes: whatever
// it answers, a host changes nothing outside its slot and holds no more than the bounds.
const temp = tempDirs();
after(() => temp.removeAll());

const json =
  (body: object): StubHandler =>
  (_req, res) => {
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify(body));
  };

const entry = (path: string, type: ManifestEntry['type'], mode: number, size = 0, target?: string): ManifestEntry => ({
  path,
  type,
  mode,
  size,
  mtimeMs: 1_700_000_000_000,
  ...(target ? { target } : {}),
});

function frame(path: string, content: Buffer): Buffer {
  return Buffer.concat([frameHeader(path, content.length), content, createHash('sha256').update(content).digest()]);
}

/** Frames for every path asked for, each file's content from `contents`. */
const framesOf =
  (contents: Record<string, Buffer>): StubHandler =>
  (_req, res, body) => {
    const paths = pathsAsked(body);
    res.end(Buffer.concat(paths.map((p) => frame(p, contents[p] ?? Buffer.alloc(0)))));
  };

/** A slot inside a directory of its own, beside a precious tree outside it that a link in the slot points to. */
async function slotBesidePrecious() {
  const root = await temp.make('mirrorswap-hostile-');
  const into = join(root, 'slot');
  const outside = join(root, 'outside');
  await mkdir(into);
  await mkdir(join(outside, 'tree'), { recursive: true });
  await writeFile(join(outside, 'precious.txt'), 'keep me');
  await writeFile(join(outside, 'tree/also.txt'), 'keep me too');
  await symlink(outside, join(into, 'link'));
  await writeFile(join(into, 'victim.txt'), 'in the slot');
  await mkdir(join(into, 'in/the'), { recursive: true });
  await writeFile(join(into, 'in/the/slot.txt'), 'in the slot');
  // a slot pulled before, with its content index: a pull into one without asks for the whole manifest
  await mkdir(join(into, '.mirrorswap-meta'));
  const intact = async () => {
    assert.equal(await readFile(join(outside, 'precious.txt'), 'utf8'), 'keep me');
    assert.equal(await readFile(join(outside, 'tree/also.txt'), 'utf8'), 'keep me too');
  };
  return { into, outside, intact };
}

const pull = (at: { url: string; token: string }, into: string, extra: Partial<PullOptions> = {}) =>
  pullSnapshot({
    from: at.url,
    token: at.token,
    snapshot: 's2',
    base: 's1',
    into,
    durable: false,
    timeoutMs: 5000,
    ...extra,
  });

describe('a hostile coordinator cannot change anything outside the slot', () => {
  for (const removed of [
    ['link/precious.txt'],
    ['link/tree'],
    ['link/tree/also.txt', 'link/tree'],
    ['in/the/slot.txt', 'link/precious.txt'], // the first sorted first (deepest): checked, not removed
  ]) {
    it(`removing ${JSON.stringify(removed)} through a link in the slot deletes nothing outside`, async () => {
      const s = await slotBesidePrecious();
      const c = await stubCoordinator(json({ snapshot: 's2', base: 's1', changed: [], removed }));
      try {
        await assert.rejects(pull(c, s.into), /not a directory/);
        await s.intact();
        // refused before anything was removed, in the slot too
        assert.equal(await readFile(join(s.into, 'in/the/slot.txt'), 'utf8'), 'in the slot');
      } finally {
        await c.close();
      }
    });
  }

  it('removing the link itself removes the link, never what it points to', async () => {
    const s = await slotBesidePrecious();
    const c = await stubCoordinator(json({ snapshot: 's2', base: 's1', changed: [], removed: ['link'] }));
    try {
      await pull(c, s.into);
      await assert.rejects(lstat(join(s.into, 'link')), { code: 'ENOENT' });
      await s.intact();
    } finally {
      await c.close();
    }
  });

  it('a removal below a file of the slot is refused', async () => {
    const s = await slotBesidePrecious();
    const c = await stubCoordinator(json({ snapshot: 's2', base: 's1', changed: [], removed: ['victim.txt/x'] }));
    try {
      await assert.rejects(pull(c, s.into), /not a directory/);
      assert.equal(await readFile(join(s.into, 'victim.txt'), 'utf8'), 'in the slot');
    } finally {
      await c.close();
    }
  });

  it('a delta is taken only as the answer to the delta asked for', async () => {
    const s = await slotBesidePrecious();
    const delta = (base: string) => json({ snapshot: 's2', base, changed: [], removed: ['victim.txt'] });
    for (const [asked, answered] of [
      [null, 's1'], // the whole manifest was asked for
      ['s1', 's0'], // a delta from another base
    ] as const) {
      const c = await stubCoordinator(delta(answered));
      try {
        await assert.rejects(pull(c, s.into, { base: asked }), /a delta from snapshot "s[01]" where/);
        assert.equal(await readFile(join(s.into, 'victim.txt'), 'utf8'), 'in the slot', `asked ${asked}`);
      } finally {
        await c.close();
      }
    }
    // the manifest of another snapshot than the one asked for
    const c = await stubCoordinator(json({ snapshot: 'other', base: 's1', changed: [], removed: ['victim.txt'] }));
    try {
      await assert.rejects(pull(c, s.into), /snapshot "other"/);
    } finally {
      await c.close();
    }
  });

  const unsafe: [string, string, Partial<PullOptions['limits']>?][] = [
    ['a climbing path', '../escape.txt'],
    ['a climbing path inside', 'a/../../escape.txt'],
    ['an absolute path', '/tmp/escape.txt'],
    ['a NUL byte', 'a\0b'],
    ['a path too long', `${'d/'.repeat(2100)}f`],
    ['a segment too long', 'x'.repeat(300)],
    ['a path deeper than the bound', 'a/b/c/d/e/f/g/h/i', { pathDepth: 8 }],
    ['the temp directory', '.mirrorswap-tmp/x'],
    // each of these names on disk what another string names too, or what the write API refuses
    ['a lone high surrogate', 'x\ud800'],
    ['a lone low surrogate', 'd/x\udc00'],
    ['a low surrogate before a high one', 'x\udc00\ud800'],
    ['a control character', 'a\nb'],
    ['DEL', 'a\x7fb'],
    ['a backslash', 'a\\..\\b'],
  ];
  for (const [name, path, limits] of unsafe) {
    it(`refuses ${name}, to write or to remove`, async () => {
      const s = await slotBesidePrecious();
      for (const body of [
        { snapshot: 's2', base: 's1', changed: [entry(path, 'file', 0o644, 1)], removed: [] },
        { snapshot: 's2', base: 's1', changed: [], removed: [path] },
        { snapshot: 's2', base: null, changed: [entry(path, 'dir', 0o755)], removed: [] },
      ]) {
        const c = await stubCoordinator(json(body), framesOf({ [path]: Buffer.from('!') }));
        try {
          await assert.rejects(pull(c, s.into, limits ? { limits } : {}), /unsafe path/);
          await s.intact();
          assert.deepEqual((await readdir(s.outside)).sort(), ['precious.txt', 'tree']);
          assert.deepEqual(
            (await readdir(join(s.into, '..'))).sort(),
            ['outside', 'slot'],
            'nothing written beside the slot',
          );
          assert.equal(await readFile(join(s.into, 'victim.txt'), 'utf8'), 'in the slot');
        } finally {
          await c.close();
        }
      }
    });
  }
});

describe('two spellings of one name on disk', () => {
  it('a lone surrogate cannot make a directory known under one spelling and a link under the other', async () => {
    const s = await slotBesidePrecious();
    const [a, b] = ['x\ud800', 'x\udc00']; // different strings, both written as "x\ufffd"
    let c = await stubCoordinator(
      json({
        snapshot: 's1',
        base: null,
        changed: [entry(a, 'dir', 0o755), entry(`${a}/y`, 'file', 0o644, 1)],
        removed: [],
      }),
      framesOf({ [`${a}/y`]: Buffer.from('y') }),
    );
    try {
      await assert.rejects(pull(c, s.into, { snapshot: 's1', base: null }), /unsafe path .*lone surrogate/);
    } finally {
      await c.close();
    }
    // as if the slot held that directory anyway
    await mkdir(join(s.into, 'x\ufffd'));
    await writeFile(join(s.into, 'x\ufffd/y'), 'y');
    c = await stubCoordinator(
      json({
        snapshot: 's2',
        base: 's1',
        removed: [`${a}/y`, b],
        changed: [entry(b, 'link', 0o777, 0, s.outside), entry(`${a}/pwned`, 'file', 0o644, 6)],
      }),
      framesOf({ [`${a}/pwned`]: Buffer.from('pwned\n') }),
    );
    try {
      await assert.rejects(pull(c, s.into), /unsafe path .*lone surrogate/);
      await s.intact();
      assert.deepEqual((await readdir(s.outside)).sort(), ['precious.txt', 'tree']);
    } finally {
      await c.close();
    }
  });

  it('a link target that is not well-formed, or holds a control character, is refused', async () => {
    const s = await slotBesidePrecious();
    for (const target of ['t\udc00', 'a\nb', 'a\\b']) {
      const c = await stubCoordinator(
        json({ snapshot: 's2', base: 's1', changed: [entry('l', 'link', 0o777, 0, target)], removed: [] }),
      );
      try {
        await assert.rejects(pull(c, s.into), /a link l whose target holds/);
        await assert.rejects(lstat(join(s.into, 'l')), { code: 'ENOENT' });
      } finally {
        await c.close();
      }
    }
  });

  it("a frame header's path that is not well-formed is refused", () => {
    assert.throws(() => parseFrameHeader(Buffer.from(JSON.stringify({ path: 'x\ud800', size: 0 }))), /lone surrogate/);
    assert.throws(() => parseFrameHeader(Buffer.from(JSON.stringify({ path: 'a\tb', size: 0 }))), /control character/);
  });

  it('a directory replaced by a link after it was opened for writing: nothing the link leads to is chmodded', async () => {
    const s = await slotBesidePrecious();
    await mkdir(join(s.into, 'a/sub'), { recursive: true, mode: 0o755 });
    await chmod(join(s.into, 'a/sub'), 0o555);
    await mkdir(join(s.outside, 'sub'), { mode: 0o755 });
    await chmod(join(s.outside, 'sub'), 0o755);
    const dirs = new WritableDirs(s.into);
    await dirs.open(join(s.into, 'a/sub'));
    dirs.setFinal(join(s.into, 'a/sub'), 0o500);
    // the directory goes under a spelling the copier did not forget, and a link takes its place
    await rm(join(s.into, 'a'), { recursive: true });
    await symlink(s.outside, join(s.into, 'a'));
    await dirs.settle();
    assert.equal((await lstat(join(s.outside, 'sub'))).mode & 0o7777, 0o755);
  });
});

describe('what a slot drifted to', () => {
  it('a socket, a file or a link where the snapshot has a directory is replaced, not a pull failed for ever', async () => {
    const into = await temp.make('mirrorswap-hostile-');
    // a socket: no walk lists it, so no comparison removes it (a FIFO or a device the same)
    const socket = createNetServer();
    await new Promise<void>((r) => socket.listen(join(into, 'd'), r));
    await writeFile(join(into, 'e'), 'a file');
    await symlink('.', join(into, 'l'));
    try {
      assert.ok((await lstat(join(into, 'd'))).isSocket());
      const changed = ['d', 'e', 'l'].flatMap((d) => [entry(d, 'dir', 0o755), entry(`${d}/f`, 'file', 0o644, 1)]);
      const c = await stubCoordinator(
        json({ snapshot: 's2', base: null, changed, removed: [] }),
        framesOf({ 'd/f': Buffer.from('f'), 'e/f': Buffer.from('f'), 'l/f': Buffer.from('f') }),
      );
      try {
        await pull(c, into, { base: null });
        for (const d of ['d', 'e', 'l']) {
          assert.ok((await lstat(join(into, d))).isDirectory(), d);
          assert.equal(await readFile(join(into, d, 'f'), 'utf8'), 'f');
        }
      } finally {
        await c.close();
      }
    } finally {
      socket.close();
    }
  });
});

describe('a hostile coordinator cannot exhaust a host', () => {
  it('a manifest announced larger than the bound is refused before it is read', async () => {
    const into = await temp.make('mirrorswap-hostile-');
    const c = await stubCoordinator((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': String(8 * 1024 * 1024 * 1024) });
      res.write('{"changed":[');
    });
    try {
      await assert.rejects(
        pull(c, into, { base: null }),
        /manifest of \d+ bytes or more, over the bound of 268435456 bytes/,
      );
    } finally {
      await c.close();
    }
  });

  it('a manifest streamed past the bound is refused once it passes it', async () => {
    const into = await temp.make('mirrorswap-hostile-');
    let sent = () => 0;
    const c = await stubCoordinator((_req, res) => {
      sent = flood(res, '', 0x20);
    });
    try {
      await assert.rejects(
        pull(c, into, { base: null, limits: { manifestBytes: 1024 * 1024 } }),
        /over the bound of 1048576 bytes/,
      );
      assert.ok(sent() < 16 * 1024 * 1024, `the host stopped reading: ${sent()} bytes sent`);
    } finally {
      await c.close();
    }
  });

  it('a manifest of more entries than the bound is refused', async () => {
    const into = await temp.make('mirrorswap-hostile-');
    const changed = Array.from({ length: 11 }, (_, i) => entry(`f${i}`, 'file', 0o644, 1));
    const c = await stubCoordinator(json({ snapshot: 's2', base: null, changed, removed: [] }));
    try {
      await assert.rejects(
        pull(c, into, { base: null, limits: { manifestEntries: 10 } }),
        /manifest of more than 10 entries, over the bound of 10/,
      );
    } finally {
      await c.close();
    }
  });

  for (const [name, body, refusal] of [
    [
      'many small values under a junk field',
      `{"changed":[],"removed":[],"junk":[${'{},'.repeat(10_000)}{}]}`,
      /another shape/,
    ],
    [
      'a nested value in an entry',
      '{"changed":[{"path":"a","type":"dir","mode":493,"size":0,"mtimeMs":1,"x":[0,0]}],"removed":[]}',
      /another shape/,
    ],
    [
      'more fields in an entry than an entry has',
      `{"changed":[{${Array.from({ length: ENTRY_FIELDS.size + 1 }, (_, i) => `"f${i}":0`).join(',')}}],"removed":[]}`,
      /another shape/,
    ],
    ['an unknown field of the answer', '{"changed":[],"removed":[],"junk":"x"}', /a manifest with a field "junk"/],
    [
      'a directory marked made',
      '{"changed":[{"path":"a.br","type":"dir","mode":493,"size":0,"mtimeMs":1,"made":true}],"removed":[]}',
      /a\.br marked made/,
    ],
    [
      'a file not named as a variant marked made',
      '{"changed":[{"path":"d/a.js","type":"file","mode":420,"size":1,"mtimeMs":1,"made":true}],"removed":[]}',
      /d\/a\.js marked made/,
    ],
    [
      'a made mark that is not true',
      '{"changed":[{"path":"a.js.gz","type":"file","mode":420,"size":1,"mtimeMs":1,"made":false}],"removed":[]}',
      /a\.js\.gz marked made/,
    ],
    [
      'a made mark without a hash',
      '{"changed":[{"path":"a.js.gz","type":"file","mode":420,"size":1,"mtimeMs":1,"made":true}],"removed":[]}',
      /a\.js\.gz marked made without a hash/,
    ],
    [
      'a made mark that is a string',
      '{"changed":[{"path":"a.js.gz","type":"file","mode":420,"size":1,"mtimeMs":1,"made":"yes"}],"removed":[]}',
      /a\.js\.gz marked made/,
    ],
    [
      'an unknown field of an entry',
      '{"changed":[{"path":"a","type":"dir","mode":493,"size":0,"mtimeMs":1,"junk":0}],"removed":[]}',
      /a manifest entry with a field "junk"/,
    ],
  ] as const) {
    it(`a manifest with ${name} is refused${refusal.source.includes('shape') ? ' before it is parsed' : ''}`, async () => {
      const into = await temp.make('mirrorswap-hostile-');
      const c = await stubCoordinator((_req, res) => res.end(body));
      try {
        await assert.rejects(pull(c, into, { base: null }), refusal);
      } finally {
        await c.close();
      }
    });
  }

  /** A coordinator that sends `first`, then a byte every 50 ms: never idle long enough for the idle timer. */
  const drip =
    (first: string | Buffer, byte: string): StubHandler =>
    (_req, res) => {
      res.write(first);
      const t = setInterval(() => res.write(byte), 50);
      res.on('close', () => clearInterval(t));
    };

  it('a coordinator dripping its manifest is given up on', async () => {
    const into = await temp.make('mirrorswap-hostile-');
    const c = await stubCoordinator(drip('{"changed":[],"removed":[]', ' '));
    try {
      const started = Date.now();
      await assert.rejects(
        within(pull(c, into, { base: null, timeoutMs: 500 }), 5000, 'the pull'),
        /slower than the bound of 65536 bytes a second past 500 ms/,
      );
      assert.ok(Date.now() - started < 2000);
    } finally {
      await c.close();
    }
  });

  it('a coordinator dripping a file is given up on', async () => {
    const into = await temp.make('mirrorswap-hostile-');
    const c = await stubCoordinator(
      json({ base: null, changed: [entry('a.txt', 'file', 0o644, 1_000_000)], removed: [] }),
      (_req, res) => drip(frameHeader('a.txt', 1_000_000), 'x')(_req, res, Buffer.alloc(0)),
    );
    try {
      await assert.rejects(
        within(pull(c, into, { base: null, timeoutMs: 500 }), 5000, 'the pull'),
        /slower than the bound/,
      );
    } finally {
      await c.close();
    }
  });

  it('a coordinator dripping the head of its answer is given up on', async () => {
    const into = await temp.make('mirrorswap-hostile-');
    const server = createNetServer((socket) => {
      socket.write('HTTP/1.1 200 OK\r\n');
      const t = setInterval(() => socket.write('x'), 50);
      socket.on('close', () => clearInterval(t));
      socket.on('error', () => {});
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
      await assert.rejects(
        within(pull({ url, token: 'any' }, into, { base: null, timeoutMs: 500 }), 5000, 'the pull'),
        /did not answer within 500 ms/,
      );
    } finally {
      server.close();
    }
  });

  it('a file sent in tiny writes is joined once, not once per chunk', async () => {
    const chunks = Array.from({ length: 4096 }, (_, i) => Buffer.alloc(64, i));
    const reader = new FrameReader(Readable.from(chunks) as unknown as IncomingMessage, new Pace(5000, 1));
    const concat = Buffer.concat;
    let joins = 0;
    Buffer.concat = ((list: readonly Uint8Array[], total?: number) => {
      joins++;
      return concat(list, total);
    }) as typeof Buffer.concat;
    try {
      const got = await reader.read(64 * 4096);
      assert.ok(got.equals(concat(chunks)));
    } finally {
      Buffer.concat = concat;
    }
    assert.ok(joins <= 1, `${joins} joins for one read`);
  });

  it('a frame header longer than the bound is refused before it is read', async () => {
    const into = await temp.make('mirrorswap-hostile-');
    const c = await stubCoordinator(
      json({ base: null, changed: [entry('a.txt', 'file', 0o644, 1)], removed: [] }),
      (_req, res) => {
        const length = Buffer.alloc(4);
        length.writeUInt32BE(0xfffffff0);
        res.write(length); // and never the rest: a host waiting for 4 GB of header would hang here
      },
    );
    try {
      const started = Date.now();
      await assert.rejects(pull(c, into, { base: null }), /frame header of 4294967280 bytes, over the bound of 65536/);
      assert.ok(Date.now() - started < 3000);
      await assert.rejects(lstat(join(into, 'a.txt')));
    } finally {
      await c.close();
    }
  });
});

describe('modes from a coordinator', () => {
  it('setuid, setgid and sticky bits are masked off, small and large files and directories alike', async () => {
    const into = await temp.make('mirrorswap-hostile-');
    const big = Buffer.alloc(2 * 1024 * 1024, 7);
    const c = await stubCoordinator(
      json({
        base: null,
        changed: [
          entry('sticky', 'dir', 0o1777),
          entry('sticky/setgid-dir', 'dir', 0o2755),
          entry('sticky/setuid.sh', 'file', 0o4755, 2),
          entry('setgid.txt', 'file', 0o2644, 2),
          entry('big.bin', 'file', 0o6755, big.length),
          entry('unreadable.txt', 'file', 0o000, 2),
        ],
        removed: [],
      }),
      framesOf({
        'sticky/setuid.sh': Buffer.from('#!'),
        'setgid.txt': Buffer.from('gg'),
        'big.bin': big,
        'unreadable.txt': Buffer.from('no'),
      }),
    );
    try {
      await pull(c, into, { base: null });
      const modeOf = async (p: string) => (await lstat(join(into, p))).mode & 0o7777;
      assert.equal(await modeOf('sticky'), 0o777);
      assert.equal(await modeOf('sticky/setgid-dir'), 0o755);
      assert.equal(await modeOf('sticky/setuid.sh'), 0o755);
      assert.equal(await modeOf('setgid.txt'), 0o644);
      assert.equal(await modeOf('big.bin'), 0o755);
      assert.equal(await modeOf('unreadable.txt'), 0o400, 'always readable by the host itself');
    } finally {
      await c.close();
    }
  });
});

describe('the bounds as docs/FLEET.md states them', () => {
  it("each row of the table of what a host accepts is the code's bound", async () => {
    const doc = await readText(new URL('../../../../docs/FLEET.md', import.meta.url), 'utf8');
    const row = (name: string) => {
      const m = new RegExp(`^\\| ${name}\\s*\\| ([^|]+)\\|`, 'm').exec(doc);
      assert.ok(m, `docs/FLEET.md has no row for ${name}`);
      return (m[1] as string).replaceAll(',', '');
    };
    assert.equal(PULL_LIMITS.manifestBytes, 256 * 1024 ** 2);
    assert.match(row('a manifest answer'), /^256 MiB /);
    assert.match(row('entries of a manifest answer'), new RegExp(`^${PULL_LIMITS.manifestEntries} `));
    assert.equal(PULL_LIMITS.frameHeaderBytes, 64 * 1024);
    assert.match(row('a frame header'), /^64 KiB /);
    assert.match(
      row('a path'),
      new RegExp(
        `^${PULL_LIMITS.pathBytes} bytes .* ${PULL_LIMITS.pathDepth} segments each at most ${PULL_LIMITS.segmentBytes} bytes`,
      ),
    );
    assert.match(row("a link's target"), new RegExp(`^${PULL_LIMITS.linkTargetBytes} bytes`));
    assert.equal(PULL_LIMITS.minBytesPerSecond, 64 * 1024);
    assert.match(row("a coordinator's pace"), /^64 KiB a second /);
    assert.match(row('paths asked in one files request'), new RegExp(`^${MAX_PATHS_PER_REQUEST} `));
  });
});
