import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { recordedVariantSelectionSync } from '../../../src/tree/variant-selection.js';
import { startTestAgent, syncOk } from '../../../testkit/agent.js';
import { tempStore } from '../../../testkit/store.js';
import { compressibleText } from '../../../testkit/variants.js';

/*
 * Agent.start checks variantTypes (at most 256 types of at most 32 characters) so that the selection
 * each copy records can be read back at every sync. The check is made once, on the caller's array,
 * and each sync reads the settings from the options again: a list changed after the start (a caller
 * reusing its options array) reaches the syncs unchecked.
 */
describe('the variant types an agent accepted are the ones its syncs follow', () => {
  it('a list changed by the caller after Agent.start still yields a record read back', async () => {
    const store = await tempStore();
    await store.fill('master', { 'app.js': compressibleText('app', 20_000) });
    const types = ['js', 'css'];
    const agent = await startTestAgent(store, { watchMaster: false, variantTypes: types });
    try {
      // types that JSON-escape to 6 bytes a character: 400 of them are past the record's 64 KiB bound
      for (let i = 0; i < 400; i++)
        types.push('\u0001'.repeat(30) + String.fromCharCode(0xd800 + (i >> 4), 0xdc00 + (i & 15)));
      await syncOk(agent);
      await syncOk(agent);
      for (const slot of ['a', 'b'] as const)
        assert.notEqual(
          recordedVariantSelectionSync(store.slots[slot]),
          null,
          `slot ${slot} records no selection it can read`,
        );
    } finally {
      await agent.close();
      await store.dispose();
    }
  });
});
