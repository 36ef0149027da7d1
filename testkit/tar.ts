import { type Header as TarHeader, pack as tarPack } from 'tar-stream';

export type TarEntry = [Partial<TarHeader> & { name: string }, (string | Buffer)?];

/** A tar archive of `entries` (a header and, for files, the body), built in memory. */
export async function tarOf(entries: TarEntry[]): Promise<Buffer> {
  const pack = tarPack();
  for (const [header, body] of entries) pack.entry(header, body ?? '');
  pack.finalize();
  const chunks: Buffer[] = [];
  for await (const chunk of pack) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}
