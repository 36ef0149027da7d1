import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { ERROR_CODES } from '../../../src/core/errors.js';

/** README.md's "Error codes" table and the catalogue in src/core/errors.ts name the same codes. */
describe('the error catalogue', () => {
  it("README's table lists every code of the catalogue, and no other", () => {
    const readme = readFileSync(new URL('../../../../README.md', import.meta.url), 'utf8');
    const section = readme.slice(readme.indexOf('### Error codes'));
    const table = section.slice(0, section.indexOf('\n\n', section.indexOf('| code')));
    const documented = [...table.matchAll(/^\| `([A-Z_]+)`/gm)].map((m) => m[1] as string).sort();
    assert.deepEqual(documented, Object.keys(ERROR_CODES).sort());
  });

  it('every code has a meaning', () => {
    for (const [code, meaning] of Object.entries(ERROR_CODES)) assert.ok(meaning.length > 10, code);
  });
});
