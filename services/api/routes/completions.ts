import { Router } from 'express';
import type { ApiDeps } from '../deps';
import { ApiError } from '../errors';
import { serveCompletion } from '../serve';

/** The model list and POST /v1/completions (OpenAI's shape; documents and link mode as extensions: see ../openai.ts). */
export function completionsRouter(d: ApiDeps): Router {
  const r = Router();
  r.get('/v1/models', (_req, res) => {
    res.json({ object: 'list', data: [{ id: d.model.id, object: 'model', created: 0, owned_by: 'epic-serve' }] });
  });
  r.get('/v1/models/:id', (req, res) => {
    if (req.params.id !== d.model.id) throw new ApiError(404, `model '${req.params.id}' does not exist`, 'invalid_request_error', 'model', 'model_not_found');
    res.json({ id: d.model.id, object: 'model', created: 0, owned_by: 'epic-serve' });
  });
  r.post('/v1/completions', (req, res) => serveCompletion(d, req, res, 'completion'));
  return r;
}
