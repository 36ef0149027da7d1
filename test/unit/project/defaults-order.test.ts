import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { PROXY_DEFAULTS } from '../../../middleware/defaults.js';
import { AGENT_DEFAULTS } from '../../../src/agent/agent-defaults.js';
import { HOST_DEFAULTS } from '../../../src/fleet/fleet-defaults.js';
import { DRAIN_DEFAULTS } from '../../../src/store/drain.js';
import { TREE_DEFAULTS } from '../../../src/tree/tree-defaults.js';

/**
 * Rules between the defaults of different components, which no single table
 * can hold: an open WebSocket or event stream on an old slot is cut before
 * the agent's drain gives up on it, and every agent that swaps drains alike.
 */
describe('defaults across components', () => {
  it("the proxy's grace for long-lived exchanges stays under every agent's drain timeout", () => {
    for (const drain of [AGENT_DEFAULTS.drainTimeoutMs, HOST_DEFAULTS.drainTimeoutMs]) {
      assert.ok(PROXY_DEFAULTS.upgradeDrainTimeout > 0 && PROXY_DEFAULTS.upgradeDrainTimeout < drain);
      assert.ok(PROXY_DEFAULTS.responseDrainTimeout > 0 && PROXY_DEFAULTS.responseDrainTimeout < drain);
    }
  });

  it('the sync agent and a fleet host agent drain and judge servers alike, and copy alike', () => {
    assert.equal(AGENT_DEFAULTS.drainTimeoutMs, DRAIN_DEFAULTS.drainTimeoutMs);
    assert.equal(HOST_DEFAULTS.drainTimeoutMs, DRAIN_DEFAULTS.drainTimeoutMs);
    assert.equal(AGENT_DEFAULTS.serverTtlMs, DRAIN_DEFAULTS.serverTtlMs);
    assert.equal(HOST_DEFAULTS.serverTtlMs, DRAIN_DEFAULTS.serverTtlMs);
    assert.equal(AGENT_DEFAULTS.durable, TREE_DEFAULTS.durable);
    assert.equal(HOST_DEFAULTS.durable, TREE_DEFAULTS.durable);
  });
});
