import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { describe, it } from 'node:test';
import { MOUNT_DEFAULTS, PROXY_DEFAULTS, STATIC_DEFAULTS } from '../../../middleware/defaults.js';
import { AGENT_FLAGS } from '../../../src/cli/commands/agent.js';
import { HOST_FLAGS } from '../../../src/cli/commands/host.js';
import { NGINX_FLAGS } from '../../../src/cli/commands/nginx.js';
import { SERVE_FLAGS } from '../../../src/cli/commands/serve.js';
import { UP_FLAGS } from '../../../src/cli/commands/up.js';
import { CLIENT_FLAGS } from '../../../src/cli/common.js';
import type { FlagSpecs } from '../../../src/cli/flags.js';

const README = new URL('../../../../README.md', import.meta.url);
const FLEET_DOC = new URL('../../../../docs/FLEET.md', import.meta.url);

/** The README's middleware option sections: `#### name` and the text under it. */
function optionSections(text: string): Map<string, string> {
  const sections = new Map<string, string>();
  const parts = text.split(/^#### /m).slice(1);
  for (const part of parts) {
    const [name, ...body] = part.split('\n');
    sections.set((name as string).trim(), body.join('\n').split(/^#{2,3} /m)[0] as string);
  }
  return sections;
}

/** A default as the README writes it (`250`, `true`, `"ignore"`, `false`) as a value. */
function documented(raw: string): unknown {
  return JSON.parse(raw);
}

describe('the README states the defaults the code has', () => {
  it("each middleware option's documented default is the table's", async () => {
    const sections = optionSections(await readFile(README, 'utf8'));
    const table: Record<string, unknown> = { ...MOUNT_DEFAULTS, ...STATIC_DEFAULTS };
    let checked = 0;
    for (const [name, value] of Object.entries(table)) {
      const body = sections.get(name);
      assert.ok(body, `README has no section for the option ${name}`);
      const m = /[Dd]efault\s+`([^`]+)`/.exec(body) ?? /`([^`]+)` \(the default\)/.exec(body);
      assert.ok(m, `README's section for ${name} states no default`);
      let doc = documented(m[1] as string);
      // one index file is written as a string; no extensions as false
      if (name === 'index' && typeof doc === 'string') doc = [doc];
      if (name === 'extensions' && doc === false) doc = [];
      assert.deepEqual(doc, value, `README says ${name} defaults to ${m[1]}`);
      checked++;
    }
    assert.ok(checked >= 15);
  });

  it("the proxy's documented defaults are the table's", async () => {
    const text = await readFile(README, 'utf8');
    const proxy = text.slice(text.indexOf('## The reverse-proxy middleware'), text.indexOf('## The agent and the CLI'));
    assert.match(proxy, new RegExp(`connectTimeout\` \\(ms, default \`${PROXY_DEFAULTS.connectTimeout}\``));
    assert.match(
      proxy,
      new RegExp(`idleTimeout\` \\(ms of silence from the upstream, default \`${PROXY_DEFAULTS.idleTimeout}\``),
    );
    assert.match(proxy, new RegExp(`default \`${PROXY_DEFAULTS.upgradeDrainTimeout}\``));
    assert.equal(PROXY_DEFAULTS.upgradeDrainTimeout, PROXY_DEFAULTS.responseDrainTimeout, 'README states one for both');
  });

  for (const [doc, url, minRows] of [
    ['README', README, 20],
    ['docs/FLEET.md', FLEET_DOC, 8],
  ] as const) {
    it(`each CLI flag's environment twin and default in ${doc} are its spec's`, async () => {
      const text = await readFile(url, 'utf8');
      const rows = text.split('\n').filter((l) => /^\| `--[a-z-]+/.test(l));
      assert.ok(rows.length >= minRows, `${rows.length} flag rows`);
      const specsOf = (flag: string): FlagSpecs[string] | undefined =>
        [AGENT_FLAGS, SERVE_FLAGS, UP_FLAGS, CLIENT_FLAGS, NGINX_FLAGS, HOST_FLAGS]
          .map((specs) => specs[flag])
          .find((s) => s !== undefined);
      for (const row of rows) {
        const [, flagCell, envCell, defaultCell] = row.split('|').map((c) => c.trim());
        const flag = /^`--(?:no-)?([a-z-]+)/.exec(flagCell as string)?.[1] as string;
        const spec = specsOf(flag);
        assert.ok(spec, `${doc} documents --${flag}, which no command has`);
        const env = /^`([A-Z_]+)/.exec(envCell as string)?.[1];
        assert.equal(env, spec.env, `--${flag}'s environment twin`);
        const def = /^`([^`]+)`$/.exec(defaultCell as string)?.[1];
        // a default written as <placeholders> is computed at run time
        if (def !== undefined && !def.includes('<')) assert.equal(def, String(spec.default), `--${flag}'s default`);
      }
    });
  }
});
