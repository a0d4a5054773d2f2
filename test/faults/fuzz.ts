/**
 * A seeded generator of malformed, random and hostile HTTP requests for the API, and a client that sends them over
 * loopback (node:http for well-framed requests — paths are sent as written, never normalised — and raw TCP for broken
 * framing), checking every answer: never 5xx, a JSON error body on every 4xx, a well-formed body on every 2xx.
 */
import { request, Agent } from 'node:http';
import { connect } from 'node:net';

/** mulberry32: small, fast, seeded. */
export function rng(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (n: number) => Math.floor(next() * n);
  return {
    next,
    int,
    chance: (p: number) => next() < p,
    pick: <T>(xs: readonly T[]): T => xs[int(xs.length)],
  };
}
export type Rng = ReturnType<typeof rng>;

export interface FuzzRequest {
  kind: 'http' | 'raw';
  method: string;
  path: string;
  headers: Record<string, string>;
  body?: Buffer;
  /** raw: the exact bytes written to the socket. */
  raw?: Buffer;
  label: string;
}

/** Ids the run created, so some requests reach real objects (and other tenants' objects). */
export interface Pools {
  documents: string[];
  jobs: string[];
  files: string[];
  batches: string[];
}

const deep = (n: number, open: string, close: string) => open.repeat(n) + close.repeat(n);

function hostileString(r: Rng): string {
  switch (r.int(16)) {
    case 0:
      return '';
    case 1:
      return 'x'.repeat(r.pick([1000, 100_000, 1_000_000]));
    case 2:
      return '\u0000\u0001\u0002';
    case 3:
      return '\ud800\udfff\ud83d'; // lone and reversed surrogates
    case 4:
      return '../../../../etc/passwd';
    case 5:
      return '%00%2e%2e%2f';
    case 6:
      return '<script>alert(1)</script>';
    case 7:
      return '${jndi:ldap://127.0.0.1/x}';
    case 8:
      return "'; DROP TABLE docs; --";
    case 9:
      return '\u202e\u200b\ufeff\u0301'.repeat(r.int(50) + 1);
    case 10:
      return '🦄💥'.repeat(r.int(2000) + 1);
    case 11:
      return '\r\n\r\nHTTP/1.1 200 OK\r\n';
    case 12:
      return 'Q : where does Mira live ? A :';
    case 13:
      return String(r.int(1e9));
    case 14:
      return 'doc_' + 'a'.repeat(r.pick([10, 127, 128, 129, 5000]));
    default:
      return Array.from({ length: r.int(40) }, () => String.fromCharCode(r.int(0x3000))).join('');
  }
}

function hostileValue(r: Rng, depth = 0): unknown {
  switch (r.int(14)) {
    case 0:
      return null;
    case 1:
      return r.pick([true, false]);
    case 2:
      return r.pick([0, -1, -0, 1, 0.5, -1.5, 2 ** 31, -(2 ** 31), 2 ** 53 + 2, 1e308, -1e308, 5e-324, 4096, 4097, 1e21]);
    case 3:
    case 4:
      return hostileString(r);
    case 5:
      return [];
    case 6:
      return {};
    case 7:
      return Array.from({ length: r.pick([2, 100, 20_000]) }, () => r.int(300));
    case 8:
      return JSON.parse(deep(r.pick([50, 300, 1000]), '[', ']')); // deeper nesting goes out as raw bodies
    case 9:
      return JSON.parse(`{"__proto__": {"polluted": 1}, "constructor": {"prototype": {"polluted": 1}}}`);
    case 10:
      return depth < 3 ? { a: hostileValue(r, depth + 1), [hostileString(r).slice(0, 64)]: hostileValue(r, depth + 1) } : 1;
    case 11:
      return depth < 3 ? [hostileValue(r, depth + 1), hostileValue(r, depth + 1)] : 'x';
    case 12:
      return r.pick(['16', '1e3', 'NaN', 'Infinity', 'true', 'null']);
    default:
      return { text: hostileString(r) };
  }
}

/** Replace, delete or add a value somewhere inside `v` (a copy). */
function mutate(r: Rng, v: unknown, depth = 0): unknown {
  if (depth > 6 || v === null || typeof v !== 'object' || r.chance(0.25)) return hostileValue(r);
  if (Array.isArray(v)) {
    const a = [...v];
    if (!a.length || r.chance(0.2)) a.push(hostileValue(r));
    else {
      const i = r.int(a.length);
      if (r.chance(0.2)) a.splice(i, 1);
      else a[i] = mutate(r, a[i], depth + 1);
    }
    return a;
  }
  const o: Record<string, unknown> = { ...(v as Record<string, unknown>) };
  const keys = Object.keys(o);
  const op = r.int(10);
  if (!keys.length || op === 0) o[r.pick(['extra', '__proto__', 'constructor', hostileString(r).slice(0, 32)])] = hostileValue(r);
  else if (op === 1) delete o[r.pick(keys)];
  else {
    const k = r.pick(keys);
    o[k] = mutate(r, o[k], depth + 1);
  }
  return o;
}

const MODES = ['full', 'prefix', 'naive', 'attnlink', 'attnlink0', 'cacheblend'];

function idFrom(r: Rng, pool: string[], prefix: string): string {
  const x = r.int(10);
  if (pool.length && x < 5) return r.pick(pool);
  if (x < 7) return `${prefix}${r.int(1e6)}`;
  return r.pick([
    '..%2F..%2Fetc%2Fpasswd',
    '..',
    '%2e%2e',
    '%00',
    '%ZZ',
    '%E0%A4%A',
    '%ff%fe',
    'a'.repeat(129),
    'a'.repeat(20_000),
    'x;rm%20-rf',
    '%0d%0aSet-Cookie:%20a=b',
    encodeURIComponent('\ud83d\ude00'),
    '*',
    'null',
    '__proto__',
    'constructor',
  ]);
}

function validRequestSpec(r: Rng, pools: Pools) {
  const spec: Record<string, unknown> = { max_tokens: r.int(4) + 1 };
  if (r.chance(0.5)) spec.prompt = 'Q : where does Mira live ? A :';
  else spec.question = 'Q : who works in Oslo ? A :';
  if (r.chance(0.4)) spec.documents = r.chance(0.5) && pools.documents.length ? [r.pick(pools.documents)] : [{ text: 'Mira lives in Oslo . Tom works in Rome .' }];
  if (r.chance(0.3)) spec.mode = r.pick(MODES);
  if (r.chance(0.1)) spec.k = r.int(8);
  if (r.chance(0.1)) spec.r = r.pick([0.1, 0.5, 1]);
  if (r.chance(0.1)) spec.stop = r.pick(['.', ['\n', 'A :']]);
  return spec;
}

/** Values at the edges of what the API accepts, set on a valid body: still valid, rarely exercised. */
const EDGE: Record<string, () => unknown[]> = {
  max_tokens: () => [0, 1, 64],
  max_completion_tokens: () => [0, 1],
  k: () => [0, 1, 2 ** 31, Number.MAX_SAFE_INTEGER],
  r: () => [1e-4, 1],
  mode: () => MODES,
  stop: () => ['', ['', '', '', ''], 'Q', ['\u0000'], 'x'.repeat(10_000)],
  prompt: () => [' ', '\n', '\ud800', '🦄', 'Q', '\u0000', '  \t  ', 'A :'.repeat(300)],
  question: () => [' ', '\ud83d', '.', ''],
  documents: () => [[], [{ text: '.' }], Array.from({ length: 64 }, () => ({ text: 'Mira .' })), [{ text: '\ud800 \u0000' }]],
  text: () => ['.', ' x ', '\ud800', '🦄'.repeat(100), 'word '.repeat(3000)],
  metadata: () => [{}, { ['k'.repeat(200)]: 'v'.repeat(2000) }, { a: null, b: true, c: 1.5 }],
  messages: () => [[{ role: 'user', content: null }], [{ role: 'tool', content: [] }], [{ role: 'developer', content: [{ type: 'text', text: '' }] }]],
  temperature: () => [0, 2],
  seed: () => [-1, 0, Number.MAX_SAFE_INTEGER],
  n: () => [1, null],
  user: () => ['', 'u'.repeat(256)],
};

function edgeValid(r: Rng, v: unknown): unknown {
  if (!v || typeof v !== 'object') return v;
  if (Array.isArray(v)) return v.map((x) => edgeValid(r, x));
  const o: Record<string, unknown> = {};
  for (const [k, x] of Object.entries(v)) o[k] = EDGE[k] && r.chance(0.4) ? r.pick(EDGE[k]()) : edgeValid(r, x);
  for (const k of ['max_tokens', 'k', 'r', 'stop', 'mode', 'temperature', 'seed']) if (r.chance(0.05)) o[k] = r.pick(EDGE[k]());
  return o;
}

function jsonTemplate(r: Rng, route: string, pools: Pools): unknown {
  switch (route) {
    case '/v1/documents':
      return { text: 'Mira lives in Oslo . She works at a bakery .', ...(r.chance(0.3) ? { id: `doc_${r.int(1000)}` } : {}), ...(r.chance(0.3) ? { metadata: { k: 'v', n: 1 } } : {}) };
    case '/v1/jobs':
      return { requests: Array.from({ length: r.int(3) + 1 }, () => validRequestSpec(r, pools)), ...(r.chance(0.3) ? { metadata: { a: 'b' } } : {}) };
    case '/v1/completions': {
      const s = validRequestSpec(r, pools);
      return { prompt: s.prompt ?? s.question, max_tokens: s.max_tokens, ...(s.documents ? { documents: s.documents } : {}), ...(r.chance(0.2) ? { stream: true } : {}), ...(r.chance(0.2) ? { model: 'tiny-random' } : {}) };
    }
    case '/v1/chat/completions':
      return {
        messages: [{ role: r.pick(['system', 'user', 'assistant']), content: r.chance(0.8) ? 'where does Mira live ?' : [{ type: 'text', text: 'hi' }] }],
        max_tokens: r.int(4) + 1,
        ...(r.chance(0.2) ? { stream: true, stream_options: { include_usage: true } } : {}),
      };
    case '/v1/batches':
      return { input_file_id: idFrom(r, pools.files, 'file-'), endpoint: r.chance(0.8) ? '/v1/completions' : '/v1/chat/completions', completion_window: '24h' };
    default:
      return {};
  }
}

function batchLine(r: Rng, i: number, endpoint: string): string {
  const body = endpoint === '/v1/completions' ? { prompt: 'Q : where ? A :', max_tokens: 2 } : { messages: [{ role: 'user', content: 'where ?' }], max_tokens: 2 };
  const line = { custom_id: `c-${i}`, method: 'POST', url: endpoint, body };
  return JSON.stringify(r.chance(0.1) ? mutate(r, line) : line);
}

function multipart(r: Rng): { body: Buffer; contentType: string } {
  const boundary = r.chance(0.9) ? `----fuzz${r.int(1e9)}` : r.pick(['', '"', 'x'.repeat(200)]);
  const parts: Buffer[] = [];
  const field = (name: string, value: string) => Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="${name}"\r\n\r\n${value}\r\n`);
  const file = (name: string, filename: string, content: Buffer) =>
    Buffer.concat([Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="${name}"; filename="${filename}"\r\nContent-Type: application/jsonl\r\n\r\n`), content, Buffer.from('\r\n')]);
  if (r.chance(0.85)) parts.push(field(r.chance(0.9) ? 'purpose' : 'purp', r.chance(0.85) ? 'batch' : hostileString(r).slice(0, 100)));
  const n = r.chance(0.85) ? 1 : r.int(3);
  for (let i = 0; i < n; i++) {
    const endpoint = r.chance(0.8) ? '/v1/completions' : '/v1/chat/completions';
    const lines = Array.from({ length: r.int(4) + 1 }, (_, j) => batchLine(r, j, r.chance(0.95) ? endpoint : '/v1/embeddings'));
    let content = Buffer.from(lines.join('\n') + '\n');
    if (r.chance(0.1)) content = Buffer.from([0xff, 0xfe, 0x00, 0xc0, 0x80, ...content]);
    parts.push(file(r.chance(0.9) ? 'file' : 'files', r.pick(['batch.jsonl', '../../etc/passwd', '', 'a'.repeat(300), '\u202ejsonl.exe']), content));
  }
  let body = Buffer.concat([...parts, Buffer.from(`--${boundary}--\r\n`)]);
  if (r.chance(0.15)) body = body.subarray(0, r.int(body.length)); // truncated form
  if (r.chance(0.05)) body = Buffer.from('--' + boundary + '\r\nContent-Disposition: garbage\r\n\r\nx');
  const contentType = r.chance(0.9) ? `multipart/form-data; boundary=${boundary}` : r.pick(['multipart/form-data', 'multipart/mixed; boundary=x', 'application/json']);
  return { body, contentType };
}

function rawBody(r: Rng, value: unknown): Buffer {
  switch (r.int(12)) {
    case 0: {
      const s = JSON.stringify(value);
      return Buffer.from(s.slice(0, r.int(s.length + 1))); // truncated
    }
    case 1:
      return Buffer.from(r.pick(["{'a':1}", 'NaN', '[1,2,', '{"a":1,}', '"just a string"', '123', 'null', '{"a":1}{"b":2}', '\ufeff{"a":1}', '{"a":"\\ud800"}', '{"a":"\\u00zz"}']));
    case 2: {
      // invalid UTF-8 inside a JSON string
      const s = JSON.stringify(value);
      const at = Math.max(1, s.indexOf('"') + 1);
      return Buffer.concat([Buffer.from(s.slice(0, at)), Buffer.from(r.pick([[0xff], [0xc0, 0x80], [0xed, 0xa0, 0x80], [0xf8, 0x88, 0x80, 0x80, 0x80], [0xe2, 0x82]])), Buffer.from(s.slice(at))]);
    }
    case 3:
      return Buffer.from(deep(r.pick([1000, 100_000]), '[', ']'));
    case 4:
      return Buffer.from('['.repeat(r.pick([10_000, 500_000])));
    case 5:
      return Buffer.from(deep(r.pick([1000, 50_000]), '{"a":', '}').replace(/\{"a":\}/, '{"a":1}'));
    case 6:
      return Buffer.from(Array.from({ length: r.int(2000) }, () => r.int(256)));
    case 7:
      return Buffer.alloc(0);
    default:
      return Buffer.from(JSON.stringify(value));
  }
}

const ROUTES: [method: string, path: (r: Rng, p: Pools) => string, json?: string][] = [
  ['POST', () => '/v1/documents', '/v1/documents'],
  ['GET', () => '/v1/documents'],
  ['GET', (r, p) => `/v1/documents/${idFrom(r, p.documents, 'doc_')}`],
  ['DELETE', (r, p) => `/v1/documents/${idFrom(r, p.documents, 'doc_')}`],
  ['POST', () => '/v1/jobs', '/v1/jobs'],
  ['GET', (r, p) => `/v1/jobs/${idFrom(r, p.jobs, 'job_')}${r.chance(0.5) ? '?results=' + r.pick(['true', 'false', '1', '%ZZ', '&results=true']) : ''}`],
  ['GET', (r, p) => `/v1/jobs/${idFrom(r, p.jobs, 'job_')}/events`],
  ['POST', (r, p) => `/v1/jobs/${idFrom(r, p.jobs, 'job_')}/cancel`],
  ['POST', () => '/v1/completions', '/v1/completions'],
  ['POST', () => '/v1/chat/completions', '/v1/chat/completions'],
  ['POST', () => '/v1/files'],
  ['GET', () => '/v1/files'],
  ['GET', (r, p) => `/v1/files/${idFrom(r, p.files, 'file-')}`],
  ['GET', (r, p) => `/v1/files/${idFrom(r, p.files, 'file-')}/content`],
  ['DELETE', (r, p) => `/v1/files/${idFrom(r, p.files, 'file-')}`],
  ['POST', () => '/v1/batches', '/v1/batches'],
  ['GET', (r) => `/v1/batches${r.pick(['', '?limit=1', '?after=x', '?limit=-5&limit=9'])}`],
  ['GET', (r, p) => `/v1/batches/${idFrom(r, p.batches, 'batch_')}`],
  ['POST', (r, p) => `/v1/batches/${idFrom(r, p.batches, 'batch_')}/cancel`],
  ['GET', () => '/v1/models'],
  ['GET', (r) => `/v1/models/${r.pick(['tiny-random', 'gpt-4', '..%2F', 'a'.repeat(300)])}`],
  ['GET', () => '/healthz'],
  ['GET', () => '/readyz'],
  ['GET', () => '/openapi.json'],
  ['GET', () => '/metrics'],
];

function junkPath(r: Rng): string {
  return r.pick([
    '/',
    '//v1//jobs',
    '/v1/jobs/',
    '/V1/JOBS',
    '/v1/../v1/jobs',
    '/v1/%2e%2e/admin',
    '/v1/jobs%00',
    '/v2/completions',
    '/v1/completions/extra',
    '/%ZZ',
    '/v1/' + 'a/'.repeat(500),
    '/v1/files?purpose[]=x&purpose[$ne]=1',
    '/v1/documents?__proto__[x]=1',
    '/.env',
    '/admin/queues/../../v1/jobs',
  ]);
}

/** The next fuzz request (deterministic for a seed and the pools' contents). */
export function nextRequest(r: Rng, pools: Pools, keys: { valid: string; other: string }): FuzzRequest {
  const headers: Record<string, string> = {};
  const a = r.int(20);
  if (a < 15) headers.authorization = `Bearer ${keys.valid}`;
  else if (a === 15) headers.authorization = `Bearer ${keys.other}`;
  else if (a === 16) headers.authorization = r.pick(['Bearer', 'Bearer ', 'Basic dXNlcjpwYXNz', 'bearer ' + keys.valid, `Bearer ${keys.valid} extra`, `Bearer ${'k'.repeat(4000)}`]);
  else if (a === 17) headers.authorization = `Bearer ${keys.valid.slice(0, -1)}`;

  if (r.chance(0.03)) return rawRequest(r, keys);

  let [method, pathFn, json] = r.pick(ROUTES);
  let path = r.chance(0.05) ? junkPath(r) : pathFn(r, pools);
  if (r.chance(0.05)) method = r.pick(['PUT', 'PATCH', 'DELETE', 'GET', 'POST', 'OPTIONS', 'HEAD']);
  const label = `${method} ${path.slice(0, 80)}`;

  if (path === '/v1/files' && method === 'POST') {
    const m = multipart(r);
    headers['content-type'] = m.contentType;
    return { kind: 'http', method, path, headers, body: m.body, label };
  }
  if (method === 'GET' || method === 'DELETE' || method === 'HEAD' || method === 'OPTIONS') {
    if (r.chance(0.1)) {
      headers['content-type'] = 'application/json';
      return { kind: 'http', method, path, headers, body: rawBody(r, hostileValue(r)), label };
    }
    return { kind: 'http', method, path, headers, label };
  }
  const template = json ? jsonTemplate(r, json, pools) : {};
  const valid = r.chance(0.25);
  const value = valid
    ? r.chance(0.5)
      ? edgeValid(r, template)
      : template
    : Array.from({ length: r.int(3) + 1 }).reduce<unknown>((v) => mutate(r, v), template);
  const body = valid ? Buffer.from(JSON.stringify(value)) : r.chance(0.6) ? Buffer.from(JSON.stringify(value)) : rawBody(r, value);
  const ct = r.int(20);
  headers['content-type'] =
    ct < 16
      ? 'application/json'
      : r.pick(['text/plain', 'application/json; charset=utf-16', 'application/json; charset=latin1', 'application/x-www-form-urlencoded', 'application/json; charset=utf-7', '']);
  if (r.chance(0.02)) headers['content-encoding'] = r.pick(['gzip', 'deflate', 'br', 'identity, gzip']);
  if (r.chance(0.005)) {
    // A body past the API's limit (on a path the server reads the headers of: past 16 KiB of headers it answers 431 and
    // closes while the client is still writing, which the client sees as a reset).
    if (path.length > 1000) path = '/v1/jobs';
    return { kind: 'http', method, path, headers, body: Buffer.from(JSON.stringify({ text: 'x'.repeat(9 * 1024 * 1024) })), label: `${label} (9 MiB)` };
  }
  return { kind: 'http', method, path, headers, body, label };
}

function rawRequest(r: Rng, keys: { valid: string }): FuzzRequest {
  const auth = `Authorization: Bearer ${keys.valid}\r\n`;
  const raw = r.pick([
    () => 'GARBAGE\r\n\r\n',
    () => 'GET /v1/models HTTP/9.9\r\n\r\n',
    () => `GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`,
    () => `POST /v1/jobs HTTP/1.1\r\nHost: x\r\n${auth}Content-Type: application/json\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`,
    () => `POST /v1/jobs HTTP/1.1\r\nHost: x\r\n${auth}Content-Type: application/json\r\nContent-Length: -1\r\n\r\n{}`,
    () => `GET /v1/files/\x00\xff HTTP/1.1\r\nHost: x\r\n\r\n`,
    () => `GET /v1/documents/a b HTTP/1.1\r\nHost: x\r\n\r\n`,
    () => `GET /v1/models HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n`,
    () => `GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Utf8: \xff\xfe\r\n${auth}\r\n`,
    () => `POST /v1/completions HTTP/1.1\r\nHost: x\r\n${auth}Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n`,
  ])();
  return { kind: 'raw', method: 'RAW', path: '', headers: {}, raw: Buffer.from(raw, 'latin1'), label: `RAW ${JSON.stringify(raw.slice(0, 50))}` };
}

export interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
}

export function send(port: number, agent: Agent, q: FuzzRequest, timeoutMs: number): Promise<Answer> {
  if (q.kind === 'raw') return sendRaw(port, q.raw!, timeoutMs);
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method: q.method, path: q.path, headers: { ...q.headers, ...(q.body ? { 'content-length': String(q.body.length) } : {}) }, agent }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        clearTimeout(t);
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) });
      });
      res.on('error', reject);
    });
    const t = setTimeout(() => req.destroy(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
    req.on('error', (e) => {
      clearTimeout(t);
      reject(e);
    });
    req.end(q.body);
  });
}

function sendRaw(port: number, bytes: Buffer, timeoutMs: number): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const sock = connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    const t = setTimeout(() => sock.destroy(), timeoutMs);
    sock.on('data', (c) => {
      chunks.push(c);
      // One answer is enough: stop once its body is complete.
      const all = Buffer.concat(chunks).toString('latin1');
      const head = all.indexOf('\r\n\r\n');
      const len = /content-length:\s*(\d+)/i.exec(all.slice(0, head));
      if (head >= 0 && len && all.length >= head + 4 + Number(len[1])) sock.destroy();
    });
    sock.on('error', () => undefined);
    sock.on('close', () => {
      clearTimeout(t);
      const all = Buffer.concat(chunks);
      const text = all.toString('latin1');
      const head = text.indexOf('\r\n\r\n');
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(text);
      if (!m) return reject(new Error(`raw request: no HTTP answer (${JSON.stringify(text.slice(0, 100))})`));
      const headers: Record<string, string> = {};
      for (const line of text.slice(0, head).split('\r\n').slice(1)) {
        const i = line.indexOf(':');
        if (i > 0) headers[line.slice(0, i).toLowerCase()] = line.slice(i + 1).trim();
      }
      resolve({ status: Number(m[1]), headers, body: all.subarray(head + 4) });
    });
    sock.write(bytes);
  });
}

/** What is wrong with an answer, or undefined when it is acceptable. */
export function judge(q: FuzzRequest, a: Answer): string | undefined {
  const ct = String(a.headers['content-type'] ?? '');
  const text = a.body.toString('utf8');
  if (a.status >= 500) return `${a.status}: ${text.slice(0, 200)}`;
  if (/\n\s+at .+\(.*:\d+:\d+\)/.test(text)) return `stack trace in the answer: ${text.slice(0, 200)}`;
  if (q.method === 'HEAD') return undefined; // no body by definition
  if (a.status >= 400) {
    if (!ct.startsWith('application/json')) return `${a.status} with content-type ${ct || 'none'}: ${text.slice(0, 120)}`;
    try {
      const j = JSON.parse(text);
      if (typeof j?.error?.message !== 'string') return `${a.status} without error.message: ${text.slice(0, 120)}`;
    } catch {
      return `${a.status} body is not JSON: ${text.slice(0, 120)}`;
    }
    return undefined;
  }
  if (a.status >= 200 && a.status < 300) {
    if (q.method === 'OPTIONS') return undefined;
    if (ct.startsWith('text/event-stream')) {
      const events = text.split('\n\n').filter(Boolean);
      for (const e of events) if (!/^(event: \w+\n)?data: /.test(e)) return `malformed SSE event: ${e.slice(0, 120)}`;
      if (q.path.startsWith('/v1/jobs/')) return text.includes('event: done') ? undefined : 'job event stream without done';
      return events.at(-1) === 'data: [DONE]' ? undefined : `SSE stream not ending with [DONE]: ${text.slice(-120)}`;
    }
    if (q.path.startsWith('/metrics')) return ct.startsWith('text/plain') ? undefined : `metrics as ${ct}`;
    if (q.path.includes('/content') && ct.startsWith('application/jsonl')) return undefined;
    if (!ct.startsWith('application/json')) return `${a.status} with content-type ${ct || 'none'}`;
    try {
      JSON.parse(text);
    } catch {
      return `${a.status} body is not JSON: ${text.slice(0, 120)}`;
    }
    return undefined;
  }
  return `unexpected status ${a.status}`;
}
