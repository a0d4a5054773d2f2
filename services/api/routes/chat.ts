import { Router } from 'express';
import type { ApiDeps } from '../deps';
import { serveCompletion } from '../serve';

/** POST /v1/chat/completions: the model's chat template, documents between its head and the last user turn (see ../openai.ts). */
export function chatRouter(d: ApiDeps): Router {
  const r = Router();
  r.post('/v1/chat/completions', (req, res) => serveCompletion(d, req, res, 'chat'));
  return r;
}
