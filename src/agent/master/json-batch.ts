import { isAscii } from 'node:buffer';
import { parseWritePath } from '../../store/write-path.js';
import { MAX_BATCH_OPS, type MasterWriter, type StagedOp, WriteError } from './master-writer.js';

interface BatchOp {
  op: 'put' | 'delete';
  path: string;
  content?: string;
  encoding?: 'utf8' | 'base64';
}

/**
 * The ops of a JSON batch body. A body that is plain ASCII (base64 content, or
 * text with its non-ASCII escaped) is decoded as latin1: the same string, at a
 * small fraction of what a UTF-8 decode of a megabyte costs.
 */
function parseBatchBody(body: unknown): unknown {
  if (!Buffer.isBuffer(body)) {
    throw new WriteError(
      400,
      'BAD_BATCH',
      'the body must be JSON ("Content-Type: application/json") or a tar archive ("Content-Type: application/x-tar")',
    );
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(isAscii(body) ? body.toString('latin1') : body.toString('utf8'));
  } catch (err) {
    throw new WriteError(400, 'BAD_BATCH', `the body is not valid JSON: ${(err as Error).message}`);
  }
  return (parsed as { ops?: unknown } | null)?.ops;
}

/**
 * Stage a JSON batch, `{"ops": [...]}` read whole into memory: every op is
 * checked before any body is written, then the bodies are staged in master.
 */
export async function stageJsonBatch(body: unknown, writer: MasterWriter): Promise<StagedOp[]> {
  const ops = parseBatchBody(body);
  if (!Array.isArray(ops) || ops.length === 0 || ops.length > MAX_BATCH_OPS) {
    throw new WriteError(400, 'BAD_BATCH', `body must be {"ops": [...]} with 1 to ${MAX_BATCH_OPS} operations`);
  }
  const bodies: Buffer[] = [];
  const plan: ({ op: 'delete'; path: string } | { op: 'put'; path: string; body: number })[] = [];
  for (const raw of ops as BatchOp[]) {
    if (typeof raw !== 'object' || raw === null || typeof raw.path !== 'string') {
      throw new WriteError(400, 'BAD_BATCH', 'each operation needs "op" and "path"');
    }
    const path = parseWritePath(encodeURIComponent(raw.path));
    if (raw.op === 'delete') {
      plan.push({ op: 'delete', path });
    } else if (raw.op === 'put') {
      if (typeof raw.content !== 'string')
        throw new WriteError(400, 'BAD_BATCH', `put of "${path}" needs "content" (a string)`);
      const encoding = raw.encoding ?? 'utf8';
      if (encoding !== 'utf8' && encoding !== 'base64') {
        throw new WriteError(400, 'BAD_BATCH', 'encoding must be "utf8" or "base64"');
      }
      plan.push({ op: 'put', path, body: bodies.push(Buffer.from(raw.content, encoding)) - 1 });
    } else {
      throw new WriteError(400, 'BAD_BATCH', 'op must be "put" or "delete"');
    }
  }
  const files = await writer.stageBuffers(bodies);
  return plan.map((p) =>
    p.op === 'delete' ? p : { op: 'put', path: p.path, ...(files[p.body] as { tmp: string; size: number }) },
  );
}
