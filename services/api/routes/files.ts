import { Router, type Request, type Response } from 'express';
import multer from 'multer';
import type { FileRecord } from '../../../shared/catalog';
import type { ApiDeps } from '../deps';
import { ApiError, uploadError } from '../errors';
import { newId } from '../submit';
import { checkId } from '../validate';

export function fileObject(f: FileRecord) {
  return { id: f.id, object: 'file', bytes: f.bytes, created_at: f.createdAt, filename: f.filename, purpose: f.purpose, status: 'processed', status_details: null };
}

/** OpenAI's files: batch input uploads (multipart, up to 64 MiB), and the output and error files batches write. */
export function filesRouter(d: ApiDeps): Router {
  const r = Router();
  const multipart = multer({ storage: multer.memoryStorage(), limits: { fileSize: 64 * 1024 * 1024, files: 1, fields: 8, parts: 10 } }).single('file');
  const upload = (req: Request, res: Response, next: (err?: unknown) => void) => multipart(req, res, (err?: unknown) => next(err ? uploadError(err) : undefined));

  r.post('/v1/files', upload, async (req, res) => {
    const purpose = typeof req.body?.purpose === 'string' ? req.body.purpose : undefined;
    if (purpose !== 'batch') throw new ApiError(400, `purpose must be 'batch'`, 'invalid_request_error', 'purpose');
    if (!req.file) throw new ApiError(400, 'a file is required (multipart field "file")', 'invalid_request_error', 'file');
    const rec: FileRecord = {
      id: newId('file-'),
      tenant: req.tenant,
      filename: req.file.originalname.replace(/[^\w.-]/g, '_').slice(0, 255) || 'upload.jsonl',
      purpose,
      bytes: req.file.size,
      createdAt: Math.floor(Date.now() / 1000),
    };
    await d.files.put(rec, req.file.buffer);
    res.json(fileObject(rec));
  });
  r.get('/v1/files', async (req, res) => {
    res.json({ object: 'list', data: (await d.files.list(req.tenant)).map(fileObject), has_more: false });
  });
  r.get('/v1/files/:id', async (req, res) => {
    const f = await d.files.get(req.tenant, checkId(req.params.id, 'file'));
    if (!f) throw new ApiError(404, `file ${req.params.id} not found`, 'invalid_request_error', 'id', 'not_found');
    res.json(fileObject(f));
  });
  r.get('/v1/files/:id/content', async (req, res) => {
    const c = await d.files.content(req.tenant, checkId(req.params.id, 'file'));
    if (!c) throw new ApiError(404, `file ${req.params.id} not found`, 'invalid_request_error', 'id', 'not_found');
    res.type('application/jsonl').send(c);
  });
  r.delete('/v1/files/:id', async (req, res) => {
    const id = checkId(req.params.id, 'file');
    if (!(await d.files.delete(req.tenant, id))) throw new ApiError(404, `file ${id} not found`, 'invalid_request_error', 'id', 'not_found');
    res.json({ id, object: 'file', deleted: true });
  });
  return r;
}
