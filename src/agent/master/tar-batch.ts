import type { IncomingMessage } from 'node:http';
import { extract as tarExtract } from 'tar-stream';
import { parseWritePath } from '../../store/write-path.js';
import {
  MAX_BATCH_OPS,
  type MasterWriter,
  type StagedOp,
  WriteError,
  bodyAborted,
  bodyTooLarge,
} from './master-writer.js';

/** Entry types that carry a file's bytes; directories are implied by the files under them. */
const FILE_TYPES = new Set(['file', 'contiguous-file']);
const TYPE_NAMES: Record<string, string> = {
  link: 'hard link',
  symlink: 'symbolic link',
  'character-device': 'character device',
  'block-device': 'block device',
};

function notAnArchive(err: unknown): WriteError {
  return new WriteError(400, 'BAD_BATCH', `the body is not a complete tar archive: ${(err as Error).message}`);
}

/**
 * Stage a tar archive sent as a write batch: every regular file in it becomes
 * a put of its path, streamed straight to a temp file in master (never held in
 * memory, never parsed as JSON). Directory entries are skipped; links,
 * devices and fifos are refused, as is any path the write API refuses. The
 * request body may not exceed `limit` bytes. On any refusal nothing stays
 * staged and the rest of the body is discarded, so the writer gets its answer.
 */
export async function stageTarBatch(body: IncomingMessage, writer: MasterWriter, limit: number): Promise<StagedOp[]> {
  const extract = tarExtract();
  /** Set when the body itself is refused (too large, cut short): it wins over the parse error it causes. */
  let refusal: WriteError | null = null;
  const refuse = (err: WriteError) => {
    refusal ??= err;
    extract.destroy(err);
  };
  let received = 0;
  body.on('data', (chunk: Buffer) => {
    received += chunk.length;
    if (received > limit) refuse(bodyTooLarge(limit));
  });
  body.once('close', () => {
    if (!body.readableEnded) refuse(bodyAborted());
  });
  body.on('error', () => refuse(bodyAborted()));
  body.pipe(extract as unknown as NodeJS.WritableStream);

  const paths: string[] = [];
  const entries = extract[Symbol.asyncIterator]();
  const next = async () => {
    try {
      return await entries.next();
    } catch (err) {
      throw refusal ?? notAnArchive(err);
    }
  };
  async function* contents(entry: AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
    try {
      yield* entry;
    } catch (err) {
      throw refusal ?? notAnArchive(err);
    }
  }
  async function* files(): AsyncGenerator<AsyncIterable<Uint8Array>> {
    for (let step = await next(); !step.done; step = await next()) {
      const entry = step.value;
      const { name, type } = entry.header;
      if (type === 'directory') {
        entry.resume();
        continue;
      }
      if (!FILE_TYPES.has(type)) {
        throw new WriteError(
          400,
          'BAD_BATCH',
          `archive entry "${name}" is a ${TYPE_NAMES[type] ?? type}: only regular files (and the directories that hold them) can be published`,
        );
      }
      if (paths.length >= MAX_BATCH_OPS) {
        throw new WriteError(400, 'BAD_BATCH', `an archive may hold at most ${MAX_BATCH_OPS} files`);
      }
      paths.push(parseWritePath(encodeURIComponent(name.replace(/^(\.\/)+/, ''))));
      yield contents(entry as AsyncIterable<Uint8Array>);
    }
  }

  try {
    const staged = await writer.stageSequence(files());
    if (staged.length === 0) throw new WriteError(400, 'BAD_BATCH', 'the archive holds no files');
    return staged.map((s, i) => ({ op: 'put', path: paths[i] as string, tmp: s.tmp, size: s.size }));
  } catch (err) {
    body.unpipe(extract as unknown as NodeJS.WritableStream);
    body.resume(); // discard the rest, so the refusal reaches the writer
    extract.destroy();
    throw err;
  }
}
