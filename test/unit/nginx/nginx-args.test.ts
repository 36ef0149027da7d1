import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { configTestArgs, parseNginxArgs } from '../../../src/nginx/nginx-processes.js';

/** nginx's options read back from its master's command line, with nginx's own grammar. */
describe("reading nginx's options from its master's command line", () => {
  it('from a title (arguments joined by spaces): any flag, values with spaces, glued values, grouped flags', () => {
    const title = (s: string) => parseNginxArgs(s.split(' '), false);
    assert.deepEqual(title('-c nginx.conf -e error.log'), { c: 'nginx.conf', e: 'error.log' });
    assert.deepEqual(title('-e stderr -c /etc/nginx/nginx.conf -g daemon off; worker_processes 2; -p /srv'), {
      e: 'stderr',
      c: '/etc/nginx/nginx.conf',
      g: 'daemon off; worker_processes 2;',
      p: '/srv',
    });
    assert.deepEqual(title('-c/etc/my nginx.conf -q'), { c: '/etc/my nginx.conf' });
    assert.deepEqual(title('-qc /etc/nginx.conf'), { c: '/etc/nginx.conf' });
    assert.deepEqual(title(''), {});
  });

  it('from NUL-separated arguments: each value exactly', () => {
    assert.deepEqual(parseNginxArgs(['-g', 'daemon off;', '-c', 'a b.conf', '-e', 'stderr'], true), {
      g: 'daemon off;',
      c: 'a b.conf',
      e: 'stderr',
    });
  });

  it('the check runs nginx -t with the prefix, file and directives; its error log on stderr only if nginx took -e', () => {
    assert.deepEqual(configTestArgs({ c: 'n.conf', e: '/var/log/x.log', g: 'daemon off;', p: '/srv', s: 'reload' }), [
      '-t',
      '-p',
      '/srv',
      '-c',
      'n.conf',
      '-g',
      'daemon off;',
      '-e',
      'stderr',
    ]);
    assert.deepEqual(configTestArgs({ c: 'n.conf' }), ['-t', '-c', 'n.conf']);
  });
});
