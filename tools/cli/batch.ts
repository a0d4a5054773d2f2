import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { ApiHttpError, type ApiClient } from './api';
import { CliError, EXIT, usageError } from './errors';
import { documentRef } from './ids';
import { note, progressBar, seconds, setInterruptHint, sleep } from './progress';

export interface BatchOptions {
  input: string;
  out?: string;
  /** Sets `mode` on every request. */
  mode?: string;
  /** Sets `k` on every request. */
  k?: number;
  /** Give up following after this long (ms); 0 = no limit. The job keeps running. */
  timeoutMs: number;
}

export interface JobView {
  id: string;
  status: string;
  total: number;
  completed: number;
  failed: number;
  progress: number;
  results?: { index: number; ok: boolean; result?: ServeResult; error?: unknown }[];
}

interface ServeResult {
  text: string;
  tokens?: number[];
  finishReason?: string;
  promptTokens?: number;
  cachedTokens?: number;
  computedTokens?: number;
  mode?: string;
  ttftMs?: number;
}

/** One line of the results file. */
export interface ResultLine {
  index: number;
  /** The request's line in the input file. */
  line: number;
  ok: boolean;
  text?: string;
  finish_reason?: string;
  mode?: string;
  usage?: { prompt_tokens?: number; completion_tokens?: number; cached_tokens?: number; computed_tokens?: number };
  error?: string;
}

const TERMINAL = new Set(['completed', 'failed', 'expired', 'cancelled']);

/** `dir/requests.jsonl` → `dir/requests.results.jsonl`. */
export function defaultOut(input: string): string {
  const abs = resolve(input);
  return join(dirname(abs), `${basename(abs).replace(/\.(jsonl|ndjson|json)$/i, '')}.results.jsonl`);
}

/**
 * Requests from a JSONL file, one per non-blank line, in the /v1/jobs request shape. Document strings that are not
 * valid ids are read as paths relative to the ingested folder and turned into the ids `ingest` derives.
 * Every bad line is reported with its number.
 */
export function readRequests(file: string, o: Pick<BatchOptions, 'mode' | 'k'> = {}): { requests: Record<string, unknown>[]; lines: number[] } {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw usageError(`cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  const requests: Record<string, unknown>[] = [];
  const lines: number[] = [];
  const errors: string[] = [];
  const bad = (n: number, msg: string) => errors.push(`${file}:${n}: ${msg}`);
  text.split(/\r?\n/).forEach((raw, i) => {
    const n = i + 1;
    const s = raw.replace(/^\uFEFF/, '').trim();
    if (!s) return;
    let v: unknown;
    try {
      v = JSON.parse(s);
    } catch (e) {
      return void bad(n, `not valid JSON (${(e as Error).message})`);
    }
    if (typeof v !== 'object' || v === null || Array.isArray(v)) return void bad(n, 'expected a JSON object like {"documents": ["id"], "question": "…", "max_tokens": 16}');
    const r = { ...(v as Record<string, unknown>) };
    if (r.documents !== undefined) {
      if (!Array.isArray(r.documents)) return void bad(n, '"documents" must be an array of document ids, paths or {"text": "…"}');
      r.documents = r.documents.map((d) => (typeof d === 'string' ? documentRef(d) : d));
    }
    if (typeof r.question !== 'string' && typeof r.prompt !== 'string') return void bad(n, 'a request needs a "question" or a "prompt" string');
    if (o.mode !== undefined) r.mode = o.mode;
    if (o.k !== undefined) r.k = o.k;
    requests.push(r);
    lines.push(n);
  });
  if (errors.length) {
    const shown = errors.slice(0, 10);
    if (errors.length > shown.length) shown.push(`… and ${errors.length - shown.length} more bad lines`);
    throw usageError(`bad requests file:\n  ${shown.join('\n  ')}`);
  }
  if (!requests.length) throw usageError(`${file}: no requests (one JSON object per line)`);
  return { requests, lines };
}

/** Read the stream /v1/jobs/:id/events until `done` or a terminal status; undefined if it broke off first. */
async function followEvents(api: ApiClient, id: string, onProgress: (v: JobView) => void, signal?: AbortSignal): Promise<JobView | undefined> {
  let res: Response;
  try {
    res = await api.raw('GET', `/v1/jobs/${encodeURIComponent(id)}/events`, { headers: { accept: 'text/event-stream' }, signal });
  } catch (e) {
    if ((e as Error).name === 'TimeoutError' || (e as Error).name === 'AbortError') throw e;
    return undefined;
  }
  if (!res.ok || !res.body || !(res.headers.get('content-type') ?? '').includes('text/event-stream')) {
    await res.body?.cancel().catch(() => undefined);
    return undefined;
  }
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buf = '';
  let last: JobView | undefined;
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true }).replace(/\r\n?/g, '\n');
      let cut: number;
      while ((cut = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, cut);
        buf = buf.slice(cut + 2);
        let event = 'message';
        const data: string[] = [];
        for (const line of block.split('\n')) {
          if (line.startsWith('event:')) event = line.slice(6).trim();
          else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
        }
        if (!data.length) continue;
        const payload = JSON.parse(data.join('\n')) as JobView;
        if (event === 'progress') {
          last = payload;
          onProgress(payload);
          if (TERMINAL.has(payload.status)) return payload;
        } else if (event === 'done') {
          return last ? { ...last, status: payload.status } : undefined;
        }
      }
    }
  } catch (e) {
    if ((e as Error).name === 'TimeoutError' || (e as Error).name === 'AbortError') throw e;
    return undefined;
  } finally {
    await reader.cancel().catch(() => undefined);
  }
  return undefined;
}

/** Poll GET /v1/jobs/:id until the job ends. */
async function pollJob(api: ApiClient, id: string, onProgress: (v: JobView) => void, deadline: number): Promise<JobView> {
  for (;;) {
    const v = await api.json<JobView>('GET', `/v1/jobs/${encodeURIComponent(id)}`);
    onProgress(v);
    if (TERMINAL.has(v.status)) return v;
    if (deadline && Date.now() > deadline) throw Object.assign(new Error('timeout'), { name: 'TimeoutError' });
    await sleep(500);
  }
}

function errorText(e: unknown): string {
  if (typeof e === 'string') return e;
  if (e && typeof e === 'object') {
    const o = e as { error?: unknown; message?: unknown };
    if (typeof o.error === 'string') return o.error;
    if (o.error && typeof o.error === 'object' && typeof (o.error as { message?: unknown }).message === 'string') return (o.error as { message: string }).message;
    if (typeof o.message === 'string') return o.message;
  }
  return JSON.stringify(e ?? 'no result');
}

export function resultLines(job: JobView, lines: number[]): ResultLine[] {
  const byIndex = new Map((job.results ?? []).map((r) => [r.index, r]));
  return lines.map((line, index) => {
    const r = byIndex.get(index);
    if (!r) return { index, line, ok: false, error: `no result (job ${job.status})` };
    if (!r.ok || !r.result) return { index, line, ok: false, error: errorText(r.error) };
    const x = r.result;
    return {
      index,
      line,
      ok: true,
      text: x.text,
      finish_reason: x.finishReason,
      mode: x.mode,
      usage: { prompt_tokens: x.promptTokens, completion_tokens: x.tokens?.length, cached_tokens: x.cachedTokens, computed_tokens: x.computedTokens },
    };
  });
}

/** Submit a JSONL file as one job, follow it with a progress bar, write the results JSONL. */
export async function batch(api: ApiClient, o: BatchOptions): Promise<{ code: number; summary: string; out: string; results: ResultLine[] }> {
  const input = resolve(o.input);
  const { requests, lines } = readRequests(input, o);
  const out = o.out ? resolve(o.out) : defaultOut(input);
  const t0 = Date.now();

  let job: JobView;
  try {
    job = await api.json<JobView>('POST', '/v1/jobs', { requests, metadata: { source: 'epic-cli', file: basename(input) } });
  } catch (e) {
    if (e instanceof ApiHttpError && e.status < 500) {
      const m = /requests\[(\d+)\]/.exec(e.apiMessage);
      let where = m && lines[Number(m[1])] !== undefined ? ` (${input}:${lines[Number(m[1])]})` : '';
      if (o.mode !== undefined && /\]\.mode\b/.test(e.apiMessage)) where = ` (--mode ${o.mode})`;
      else if (o.k !== undefined && /\]\.k\b/.test(e.apiMessage)) where = ` (--k ${o.k})`;
      throw new CliError(`the API refused the batch: ${e.apiMessage}${where}`, e.status === 401 || e.status === 403 ? EXIT.error : EXIT.usage);
    }
    throw e;
  }
  note(`job ${job.id} submitted: ${job.total} requests`);
  setInterruptHint(`job ${job.id} keeps running on the server: GET ${api.base}/v1/jobs/${job.id} (cancel: POST ${api.base}/v1/jobs/${job.id}/cancel)`);

  const bar = progressBar(`${job.id.slice(0, 12)} [{bar}] {value}/{total} requests | {failed} failed | {duration_formatted}`);
  bar.start(job.total, 0, { failed: 0 });
  const show = (v: JobView) => bar.update(v.completed + v.failed, { failed: v.failed });
  const deadline = o.timeoutMs ? Date.now() + o.timeoutMs : 0;
  let end: JobView;
  try {
    const streamed = await followEvents(api, job.id, show, deadline ? AbortSignal.timeout(o.timeoutMs) : undefined);
    end = streamed && TERMINAL.has(streamed.status) ? streamed : await pollJob(api, job.id, show, deadline);
  } catch (e) {
    const n = (e as Error).name;
    if (n === 'TimeoutError' || n === 'AbortError') {
      throw new CliError(`stopped following job ${job.id} after ${seconds(o.timeoutMs)} (--timeout); it keeps running: GET ${api.base}/v1/jobs/${job.id}`);
    }
    throw e;
  } finally {
    bar.done();
  }
  setInterruptHint('');

  const full = await api.json<JobView>('GET', `/v1/jobs/${encodeURIComponent(job.id)}?results=true`);
  const results = resultLines(full, lines);
  const tmp = `${out}.tmp-${process.pid}`;
  try {
    writeFileSync(tmp, results.map((r) => JSON.stringify(r)).join('\n') + '\n');
    renameSync(tmp, out);
  } catch (e) {
    throw new CliError(`cannot write results to ${out}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  const ok = results.filter((r) => r.ok).length;
  const failed = results.length - ok;
  const firstError = results.find((r) => !r.ok);
  const summary = [
    `job ${full.id} ${full.status}: ${ok} of ${results.length} requests ok, ${failed} failed, in ${seconds(Date.now() - t0)}`,
    ...(firstError ? [`first failure (line ${firstError.line}): ${firstError.error}`] : []),
    `results: ${out}`,
  ].join('\n');
  return { code: failed || full.status !== 'completed' ? EXIT.partial : EXIT.ok, summary, out, results };
}
