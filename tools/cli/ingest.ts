import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { ApiHttpError, type ApiClient } from './api';
import { CliError, EXIT } from './errors';
import { listTextFiles } from './files';
import { assignIds } from './ids';
import { note, progressBar, seconds, sleep } from './progress';

export interface IngestOptions {
  folder: string;
  exts: string[];
  wait: boolean;
  /** How long --wait waits for warm chunks, in ms. */
  timeoutMs: number;
  json: boolean;
}

export interface IngestedDocument {
  path: string;
  id: string;
  /** Set once the API accepted the document. */
  chunks?: number;
  tokens?: number;
  warm_chunks?: number;
  /** Why the file was skipped or refused. */
  skipped?: string;
  error?: string;
}

interface DocumentView {
  id: string;
  chunks: number;
  tokens?: number;
  warm_chunks?: number;
}

function readText(file: string): { text?: string; skipped?: string } {
  const buf = readFileSync(file);
  if (buf.includes(0)) return { skipped: 'binary (contains NUL bytes)' };
  const text = buf.toString('utf8').replace(/^\uFEFF/, '');
  if (!text.trim()) return { skipped: 'empty' };
  return { text };
}

function fatal(e: unknown): boolean {
  return !(e instanceof ApiHttpError) || e.status === 401 || e.status === 403 || e.status >= 500;
}

/** POST every text file of a folder as a document; with `wait`, follow until every chunk is warm. */
export async function ingest(api: ApiClient, o: IngestOptions): Promise<{ docs: IngestedDocument[]; code: number; summary: string }> {
  const root = resolve(o.folder);
  const paths = listTextFiles(root, o.exts);
  if (!paths.length) throw new CliError(`no files ending in ${o.exts.join(', ')} under ${root} (choose others with --ext)`, EXIT.usage);
  const ids = assignIds(paths);
  const docs: IngestedDocument[] = paths.map((path, i) => ({ path, id: ids[i] }));
  const t0 = Date.now();

  const bar = progressBar('ingest [{bar}] {value}/{total} documents | {file}');
  bar.start(docs.length, 0, { file: '' });
  try {
    for (const [i, d] of docs.entries()) {
      bar.update(i, { file: d.path });
      const { text, skipped } = readText(join(root, d.path));
      if (skipped) {
        d.skipped = skipped;
        continue;
      }
      try {
        const v = await api.json<DocumentView>('POST', '/v1/documents', { text, id: d.id, metadata: { path: d.path, source: 'epic-cli' } });
        d.chunks = v.chunks;
        d.tokens = v.tokens;
      } catch (e) {
        if (fatal(e)) throw e;
        d.error = (e as ApiHttpError).apiMessage;
      }
    }
    bar.update(docs.length, { file: '' });
  } finally {
    bar.done();
  }
  const accepted = docs.filter((d) => d.chunks !== undefined);
  const totalChunks = accepted.reduce((s, d) => s + (d.chunks ?? 0), 0);
  const lines = [`ingested ${accepted.length} of ${docs.length} files from ${root} into ${api.base}: ${totalChunks} chunks in ${seconds(Date.now() - t0)}`];

  let timedOut = false;
  if (o.wait && accepted.length) {
    note(`waiting for ${totalChunks} chunks to be precomputed…`);
    const t1 = Date.now();
    timedOut = !(await waitWarm(api, accepted, totalChunks, o.timeoutMs));
    const warm = accepted.reduce((s, d) => s + (d.warm_chunks ?? 0), 0);
    lines.push(timedOut ? `only ${warm} of ${totalChunks} chunks warm after ${seconds(o.timeoutMs)} (--timeout)` : `all ${totalChunks} chunks warm in ${seconds(Date.now() - t1)}`);
  }

  const failed = docs.filter((d) => d.error);
  const code = timedOut ? EXIT.error : failed.length ? EXIT.partial : EXIT.ok;
  return { docs, code, summary: o.json ? JSON.stringify({ api: api.base, root, documents: docs, chunks: totalChunks, timed_out: timedOut }, null, 2) : table(docs, lines, o.wait) };
}

/** Poll the documents not yet warm until all are (true) or the timeout passes (false). */
async function waitWarm(api: ApiClient, docs: IngestedDocument[], total: number, timeoutMs: number): Promise<boolean> {
  const bar = progressBar('warm   [{bar}] {value}/{total} chunks | {duration_formatted}');
  const deadline = Date.now() + timeoutMs;
  const warmSum = () => docs.reduce((s, d) => s + (d.warm_chunks ?? 0), 0);
  bar.start(total, 0);
  try {
    for (;;) {
      for (const d of docs) {
        if (d.warm_chunks !== undefined && d.warm_chunks >= (d.chunks ?? 0)) continue;
        const v = await api.json<DocumentView>('GET', `/v1/documents/${encodeURIComponent(d.id)}`);
        d.warm_chunks = v.warm_chunks ?? 0;
        d.chunks = v.chunks;
        bar.update(warmSum());
      }
      bar.update(warmSum());
      if (warmSum() >= total) return true;
      if (Date.now() > deadline) return false;
      await sleep(250);
    }
  } finally {
    bar.done();
  }
}

function table(docs: IngestedDocument[], head: string[], wait: boolean): string {
  const rows = docs.map((d) => [
    d.chunks === undefined ? '-' : String(d.chunks),
    ...(wait ? [d.warm_chunks === undefined ? '-' : String(d.warm_chunks)] : []),
    d.id,
    d.path + (d.skipped ? `  (skipped: ${d.skipped})` : d.error ? `  (refused: ${d.error})` : ''),
  ]);
  const header = ['chunks', ...(wait ? ['warm'] : []), 'id', 'path'];
  const widths = header.map((h, c) => Math.max(h.length, ...rows.map((r) => r[c].length)));
  const fmt = (r: string[]) =>
    r
      .map((cell, c) => (c === r.length - 1 ? cell : c < header.length - 2 ? cell.padStart(widths[c]) : cell.padEnd(widths[c])))
      .join('  ');
  return [...head, '', fmt(header), ...rows.map(fmt)].join('\n');
}
