/**
 * Requests the API's routes never see, sent over raw sockets to the real API process (issue #21, bug 5): what Node's
 * parser refuses, and bodies declared past the limit, get the API's JSON error shape, at once.
 */
import { connect } from 'node:net';
import { HEADERS_TIMEOUT_MS } from '../../services/api/app';
import { ProcStack, RedisServer } from './procs';

interface RawAnswer {
  status: number;
  headers: Record<string, string>;
  body: string;
  json: any;
  /** The server closed the connection. */
  closed: boolean;
  ms: number;
}

/**
 * Writes `data` to the API on a fresh connection and reads one answer: until the server closes the connection, or the
 * answer's Content-Length is in, or `waitMs` passed (then whatever came).
 */
function raw(port: number, data: string, waitMs = 5000): Promise<RawAnswer> {
  return new Promise((resolve, reject) => {
    const t0 = Date.now();
    const sock = connect(port, '127.0.0.1');
    let buf = Buffer.alloc(0);
    let closed = false;
    const finish = () => {
      clearTimeout(timer);
      const text = buf.toString('latin1');
      const end = text.indexOf('\r\n\r\n');
      const head = end < 0 ? text : text.slice(0, end);
      const [line, ...rest] = head.split('\r\n');
      const headers: Record<string, string> = {};
      for (const h of rest) {
        const i = h.indexOf(':');
        if (i > 0) headers[h.slice(0, i).trim().toLowerCase()] = h.slice(i + 1).trim();
      }
      const body = end < 0 ? '' : buf.subarray(end + 4).toString('utf8');
      let json: any;
      try {
        json = JSON.parse(body);
      } catch {
        json = undefined;
      }
      sock.destroy();
      resolve({ status: Number(/^HTTP\/1\.1 (\d{3})/.exec(line ?? '')?.[1] ?? 0), headers, body, json, closed, ms: Date.now() - t0 });
    };
    const complete = () => {
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return false;
      const len = /\r\ncontent-length: *(\d+)/i.exec(buf.subarray(0, end).toString('latin1'));
      return !!len && buf.length >= end + 4 + Number(len[1]);
    };
    const timer = setTimeout(finish, waitMs);
    sock.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      // Keep reading a little past a complete answer to see whether the server closes the connection.
      if (complete()) setTimeout(finish, 200);
    });
    sock.on('close', () => {
      closed = true;
      finish();
    });
    sock.on('error', (e) => (buf.length ? undefined : reject(e)));
    sock.write(data);
  });
}

describe('HTTP requests outside the routes, over raw sockets', () => {
  let redis: RedisServer;
  let s: ProcStack;
  beforeAll(async () => {
    redis = await RedisServer.start();
    s = await ProcStack.start({ redis, services: ['api'] });
  }, 60_000);
  afterAll(async () => {
    await s?.close();
    await redis?.stop();
  });

  const jsonError = (a: RawAnswer) => ({
    status: a.status,
    contentType: a.headers['content-type']?.split(';')[0],
    hasMessage: typeof a.json?.error?.message === 'string',
    type: a.json?.error?.type,
  });

  test('an HTTP/1.1 request without Host: 400 in the JSON error shape (was an empty 400)', async () => {
    const a = await raw(s.apiPort, 'GET /v1/models HTTP/1.1\r\n\r\n');
    expect(jsonError(a)).toEqual({ status: 400, contentType: 'application/json', hasMessage: true, type: 'invalid_request_error' });
    expect(a.closed).toBe(true);
    // HTTP/1.0 needs none; with one, the same request is served.
    expect((await raw(s.apiPort, 'GET /v1/models HTTP/1.0\r\n\r\n')).status).toBe(200);
    expect((await raw(s.apiPort, `GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`)).status).toBe(200);
  });

  test('an Expect the server cannot meet: 417 in the JSON error shape (was an empty 417)', async () => {
    const a = await raw(s.apiPort, 'POST /v1/completions HTTP/1.1\r\nHost: x\r\nExpect: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}');
    expect(jsonError(a)).toEqual({ status: 417, contentType: 'application/json', hasMessage: true, type: 'invalid_request_error' });
    expect(a.json.error.code).toBe('expectation_failed');
    // 100-continue is met as before: Node sends the interim answer, then the route answers.
    const c = await raw(s.apiPort, 'GET /v1/models HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n');
    expect(c.body).toContain('"object":"list"');
  });

  test('a malformed request line: 400 in the JSON error shape', async () => {
    const a = await raw(s.apiPort, 'NOT A REQUEST\r\n\r\n');
    expect(jsonError(a)).toEqual({ status: 400, contentType: 'application/json', hasMessage: true, type: 'invalid_request_error' });
  });

  test('a declared Content-Length past the limit is refused before the body is read: 413 at once, connection closed', async () => {
    for (const [path, type] of [
      ['/v1/completions', 'application/json'],
      ['/v1/documents', 'application/json'],
      ['/v1/files', 'multipart/form-data; boundary=x'],
    ]) {
      const a = await raw(s.apiPort, `POST ${path} HTTP/1.1\r\nHost: x\r\nContent-Type: ${type}\r\nContent-Length: 99999999999\r\n\r\n{}`);
      expect({ path, ...jsonError(a), code: a.json?.error?.code, closed: a.closed, fast: a.ms < 2000 }).toEqual({
        path,
        status: 413,
        contentType: 'application/json',
        hasMessage: true,
        type: 'invalid_request_error',
        code: 'body_too_large',
        closed: true,
        fast: true,
      });
    }
    // Just past the limit (8 MiB), a client that writes its whole body reads the 413, not a broken pipe.
    const big = await fetch(`http://127.0.0.1:${s.apiPort}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: 'x'.repeat(9 * 1024 * 1024) });
    expect({ status: big.status, code: ((await big.json()) as any).error.code }).toEqual({ status: 413, code: 'body_too_large' });
    // Within the limit, the same route reads the body as before.
    const ok = await raw(s.apiPort, 'POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}');
    expect(ok.status).toBe(400);
    expect(ok.json.error.message).toMatch(/prompt/);
  });

  test('a client that never finishes its headers is answered 408 (JSON) and cut after the headers timeout', async () => {
    const a = await raw(s.apiPort, 'GET /v1/models HTTP/1.1\r\nHost: x\r\n', HEADERS_TIMEOUT_MS + 5000);
    expect(jsonError(a)).toEqual({ status: 408, contentType: 'application/json', hasMessage: true, type: 'invalid_request_error' });
    expect(a.closed).toBe(true);
    expect(a.ms).toBeGreaterThanOrEqual(HEADERS_TIMEOUT_MS - 100);
    expect(a.ms).toBeLessThan(HEADERS_TIMEOUT_MS + 3000);
  }, 30_000);
});
