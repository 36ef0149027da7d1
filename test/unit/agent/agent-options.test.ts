import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import { Agent, type AgentOptions } from '../../../src/agent/agent.js';
import { memoryLogger } from '../../../testkit/logger.js';
import { type TempStore, tempStore } from '../../../testkit/store.js';

/**
 * The agent's options given in code are checked as the command line checks
 * its flags: a value that would do something else than it seems to is
 * refused with a TypeError naming the option, before the store is touched.
 */
describe('Agent.start refuses variant options that would not do what they say', () => {
  let store: TempStore;
  before(async () => {
    store = await tempStore();
    await store.fill('master', { 'a.js': 'x'.repeat(4000) });
  });
  after(() => store.dispose());

  const hostile: [string, Partial<AgentOptions> | Record<string, unknown>, RegExp][] = [
    ['no coding at all', { variantEncodings: [] }, /variantEncodings option is empty.*variants: false/],
    ['an unknown coding', { variantEncodings: ['br', 'zstd'] }, /variantEncodings option: unknown coding "zstd"/],
    ['codings as a string', { variantEncodings: 'br,gzip' }, /variantEncodings option must be an array/],
    ['no type at all', { variantTypes: [] }, /variantTypes option is empty.*variants: false/],
    ['a glob for a type', { variantTypes: ['*.js'] }, /variantTypes option: "\*\.js" is not a file extension/],
    ['a path for a type', { variantTypes: ['js', 'assets/css'] }, /"assets\/css" is not a file extension/],
    ['an inner dot', { variantTypes: ['min.js'] }, /"min\.js" is not a file extension/],
    ['a number for a type', { variantTypes: [42] }, /variantTypes option: 42 is not/],
    // each copy records the selection it follows, read back at every sync: one too long to read back
    // would have the copy derived whole at every sync
    ['a type of 33 characters', { variantTypes: ['x'.repeat(33)] }, /"x{33}" is longer than 32 characters/],
    [
      'more than 256 types',
      { variantTypes: Array.from({ length: 257 }, (_, i) => `t${i}`) },
      /variantTypes option lists 257 types: at most 256/,
    ],
    ['brotli quality 12', { brotliQuality: 12 }, /brotliQuality option must be an integer from 0 to 11, not 12/],
    ['gzip level 0', { gzipLevel: 0 }, /gzipLevel option must be an integer from 1 to 9, not 0/],
    ['a fractional level', { gzipLevel: 6.5 }, /gzipLevel option must be an integer/],
    ['a negative floor', { variantMinSize: -1 }, /variantMinSize option must be an integer from 0/],
    ['a floor as a string', { variantMinSize: '1k' }, /variantMinSize option must be an integer from 0/],
    ['a saving of 100%', { variantMinSaving: 100 }, /variantMinSaving option must be an integer from 0 to 99/],
    ['NaN threads', { variantThreads: Number.NaN }, /variantThreads option must be an integer from 0 to 64, not NaN/],
    ['variants as a string', { variants: 'yes' }, /variants option must be true or false/],
    // "no" read as truthy would compress as files land: the opposite of what it says
    ['precompress as a string', { precompress: 'no' }, /precompress option must be true or false/],
  ];
  for (const [what, options, message] of hostile) {
    it(`refuses ${what}`, async () => {
      const stateBefore = await readdir(store.stateDir);
      await assert.rejects(
        Agent.start({
          layout: store,
          logger: memoryLogger(),
          watchMaster: false,
          ...(options as Partial<AgentOptions>),
        }),
        (err: Error) => err instanceof TypeError && message.test(err.message),
      );
      // refused before anything was written: no state, no lock, no copy
      assert.deepEqual(await readdir(store.slots.a), []);
      assert.deepEqual(await readdir(store.stateDir), stateBefore);
    });
  }

  it('takes empty lists when variants are off, and a floor of 0', async () => {
    const agent = await Agent.start({
      layout: store,
      logger: memoryLogger(),
      watchMaster: false,
      variants: false,
      variantEncodings: [],
      variantTypes: [],
      variantMinSize: 0,
    });
    await agent.close();
  });
});
