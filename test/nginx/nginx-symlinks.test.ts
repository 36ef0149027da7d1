import assert from 'node:assert/strict';
import { lchown, mkdir, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { NginxCompanion } from '../../src/nginx/companion.js';
import { memoryLogger } from '../../testkit/app.js';
import { type TestNginx, startNginx } from '../../testkit/nginx.js';
import { type TempStore, tempStore } from '../../testkit/store.js';

const root = process.getuid?.() === 0;
/** nobody: a user other than the one who owns the files the links point to. */
const OTHER_UID = 65534;
const SECRET = 'secret of another user\n';

/**
 * The nginx companion's threat model: nginx (often run as root) follows
 * symbolic links by default, so whoever can write master, a slot or `state/`
 * decides what it serves. `disable_symlinks if_not_owner from=$document_root`
 * (the README's server block) refuses a link whose owner is not its target's.
 */
describe('nginx with disable_symlinks if_not_owner, as the README recommends', () => {
  let store: TempStore | undefined;
  let nginx: TestNginx | undefined;
  let companion: NginxCompanion | undefined;
  after(async () => {
    await companion?.close();
    await nginx?.dispose();
    await store?.dispose();
  });

  it('refuses a link in the slot to a file of another owner, serves a link of the same owner', {
    skip: !root && 'needs root to give a link another owner',
  }, async () => {
    store = await tempStore();
    const outside = join(store.root, 'outside');
    await mkdir(outside);
    // owned by root (the test's user), outside the slot
    await writeFile(join(outside, 'secret.txt'), SECRET);
    await store.fill('a', { 'index.html': 'home', 'page.txt': 'page\n' });
    await store.publish(1, 'a');
    const slot = store.slots.a;
    // the recommended setting for the site, and a location without it: the control, proving the links work
    nginx = await startNginx({
      server: 'disable_symlinks if_not_owner from=$document_root;\n    location /control/ { disable_symlinks off; }',
    });
    companion = await NginxCompanion.start({
      layout: store,
      includeFile: nginx.includeFile,
      pidFile: nginx.pidFile,
      reloadTimeout: 1500,
      retryInterval: 200,
      serverId: 'nginx-symlinks',
      heartbeatInterval: 200,
      watch: 'native',
      pollInterval: 1000,
      logger: memoryLogger(),
    });
    await nginx.start();
    // what someone who can write the slot (but is not the owner of the secret) would put there
    await mkdir(join(slot, 'control'));
    for (const link of [join(slot, 'evil.txt'), join(slot, 'control', 'evil.txt')]) {
      await symlink(join(outside, 'secret.txt'), link);
      await lchown(link, OTHER_UID, OTHER_UID);
    }
    // a link within the slot, with its target's owner: still served
    await symlink('page.txt', join(slot, 'alias.txt'));

    const get = async (path: string) => {
      const res = await fetch(`http://127.0.0.1:${nginx?.port}${path}`);
      return { status: res.status, body: await res.text() };
    };
    const control = await get('/control/evil.txt');
    assert.deepEqual(control, { status: 200, body: SECRET }, 'without the setting, nginx follows the link');
    const refused = await get('/evil.txt');
    assert.equal(refused.status, 403, JSON.stringify(refused));
    assert.ok(!refused.body.includes(SECRET));
    assert.deepEqual(await get('/alias.txt'), { status: 200, body: 'page\n' });
    assert.deepEqual(await get('/page.txt'), { status: 200, body: 'page\n' });
  });
});
