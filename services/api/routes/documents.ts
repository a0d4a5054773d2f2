import { Router } from 'express';
import { z } from 'zod';
import type { DocumentRecord } from '../../../shared/catalog';
import { ID_PATTERN, ID_RULE } from '../../../shared/ids';
import { chunkText, maxTextChars } from '../resolve';
import { tenantSalt } from '../tenancy';
import type { ApiDeps } from '../deps';
import { ApiError } from '../errors';
import { checkId, parseBody } from '../validate';
import { newId } from '../submit';

export const DocumentBody = z
  .object({
    text: z.string().min(1),
    id: z.string().regex(ID_PATTERN, ID_RULE).optional(),
    metadata: z.record(z.string(), z.union([z.string(), z.number(), z.boolean(), z.null()])).optional(),
  })
  .strict();

function view(doc: DocumentRecord, warm?: number) {
  return {
    id: doc.id,
    object: 'document',
    chars: doc.chars,
    chunks: doc.chunks.length,
    tokens: doc.chunks.reduce((s, c) => s + c.tokens.length, 0),
    warm_chunks: warm,
    metadata: doc.metadata,
    created_at: doc.createdAt,
  };
}

/** Documents: POST chunks a text with KVSplit and enqueues its chunks for precompute (one job per chunk while one is pending). */
export function documentsRouter(d: ApiDeps): Router {
  const r = Router();

  r.post('/v1/documents', async (req, res) => {
    const body = parseBody(DocumentBody, req.body);
    const salt = tenantSalt(req.tenant, d.shareAcrossTenants);
    // A document is context of a prompt (BOS + documents + question): one past the context length can never be served.
    const limit = d.model.contextLength - 1;
    const tooLong = (n: string) => new ApiError(400, `text: the document (${n}) exceeds the model's context length (${d.model.contextLength} tokens)`, 'invalid_request_error', 'text', 'context_length_exceeded');
    if (body.text.length > maxTextChars(d, limit)) throw tooLong(`${body.text.length} characters`);
    const chunks = chunkText(d, body.text, salt);
    if (!chunks.length) throw new ApiError(400, 'text: the document has no content', 'invalid_request_error', 'text');
    const tokens = chunks.reduce((n, c) => n + c.tokens.length, 0);
    if (tokens > limit) throw tooLong(`${tokens} tokens`);
    const doc: DocumentRecord = {
      id: body.id ?? newId('doc_'),
      tenant: req.tenant,
      chars: body.text.length,
      chunks,
      metadata: body.metadata ?? {},
      createdAt: Math.floor(Date.now() / 1000),
    };
    // Chunks are queued for precompute before the record is written: jobs carry their tokens, so a failed enqueue
    // leaves no document behind (a retry without an id would add it twice), and a failed write only warmed chunks.
    const unique = [...new Map(chunks.map((c) => [c.key, c])).values()];
    await d.precompute.addBulk(
      // One job per chunk while one is waiting or running (BullMQ's deduplication); a chunk posted again after its job
      // finished is warmed again (it may have been evicted since). A job id would dedupe against finished jobs too,
      // for as long as they are kept (up to a day).
      unique.map((c) => ({ name: 'chunk', data: { tokens: c.tokens, tenantSalt: salt, variant: '' }, opts: { deduplication: { id: `pc-${c.key}` } } })),
    );
    await d.documents.put(doc);
    res.status(201).json(view(doc, undefined));
  });

  r.get('/v1/documents', async (req, res) => {
    const ids = await d.documents.list(req.tenant);
    res.json({ object: 'list', data: ids });
  });

  r.get('/v1/documents/:id', async (req, res) => {
    const doc = await d.documents.get(req.tenant, checkId(req.params.id, 'document'));
    if (!doc) throw new ApiError(404, `document ${req.params.id} not found`, 'invalid_request_error', 'id', 'not_found');
    const warm = (await Promise.all(doc.chunks.map((c) => d.kv.has(c.key)))).filter(Boolean).length;
    res.json(view(doc, warm));
  });

  r.delete('/v1/documents/:id', async (req, res) => {
    const id = checkId(req.params.id, 'document');
    if (!(await d.documents.delete(req.tenant, id))) throw new ApiError(404, `document ${id} not found`, 'invalid_request_error', 'id', 'not_found');
    res.json({ id, object: 'document', deleted: true });
  });

  return r;
}
