import { MirrorswapError } from '../../core/errors.js';
import type { Etcd } from '../etcd.js';

/**
 * Put `key` as a key made now, on `lease`, and return its create revision:
 * the order in which hosts said they share a snapshot as they pull it
 * (`sharing/<snapshot>/<host>`, docs/FLEET.md). A key left from before (a
 * swap back to the same snapshot, an aborted one) would keep its older
 * create revision, and a host this one already pulls from could then pick
 * it: so one found there is removed and the key made again. Fails when the
 * key read back is not the one just made.
 */
export async function putNewKey(etcd: Etcd, key: string, value: string, lease: string): Promise<number> {
  let revision = await etcd.put(key, value, lease);
  let kv = await etcd.get(key);
  if (kv && kv.createRevision !== revision) {
    await etcd.delete(key);
    revision = await etcd.put(key, value, lease);
    kv = await etcd.get(key);
  }
  if (kv?.createRevision !== revision)
    throw new MirrorswapError('FLEET_ETCD', `${key} is not the key just made (made again meanwhile?)`);
  return revision;
}
