/**
 * A streamed request's began-mark (`…:stream:<id>:began`, what keeps a re-run of a dead worker's stream from sending
 * its tokens again) lives while the stream runs and goes when it ends: normally, and when its client left (issue #21,
 * bug 9; the end by error is in kill.test.ts). Real API and worker processes, a private redis-server.
 */
import { waitFor } from '../helpers/net';
import { ProcStack, suiteRedis } from './procs';

describe('stream marks', () => {
  const r = suiteRedis();
  let s: ProcStack;
  beforeAll(async () => {
    s = await ProcStack.start({ redis: r.redis, services: ['api', 'worker'] });
  }, 60_000);
  afterAll(async () => {
    await s?.close();
  });

  const marks = () => r.client.keys(`${s.env.CATALOG_PREFIX}:stream:*:began`);
  const noMarks = () => waitFor(async () => ((await marks()).length === 0 ? true : undefined), 10_000, 'no stream marks left');

  /** Starts a stream and reads it until `until` says stop (or it ends); returns what came and the open reader. */
  async function stream(path: string, body: object, until: (raw: string) => boolean = () => false, signal?: AbortSignal) {
    const res = await fetch(`${s.base}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ ...body, stream: true }), signal });
    expect(res.status).toBe(200);
    const reader = res.body!.getReader();
    const decoder = new TextDecoder();
    let raw = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      raw += decoder.decode(value, { stream: true });
      if (until(raw)) break;
    }
    return raw;
  }

  test('streams that end normally leave no mark', async () => {
    const done = await Promise.all([
      stream('/v1/completions', { prompt: 'Q : where ? A :', max_tokens: 6, ignore_eos: true }),
      stream('/v1/chat/completions', { messages: [{ role: 'user', content: 'where ?' }], max_tokens: 6, ignore_eos: true }),
      stream('/v1/completions', { prompt: 'Q : who ? A :', max_tokens: 6, ignore_eos: true, stream_options: { include_usage: true } }),
    ]);
    for (const raw of done) expect(raw.trimEnd().endsWith('data: [DONE]')).toBe(true);
    await noMarks();
  }, 60_000);

  test('a running stream has its mark; when its client leaves, the mark goes as the worker finishes it', async () => {
    const ctl = new AbortController();
    await stream('/v1/chat/completions', { messages: [{ role: 'user', content: 'tell me' }], max_tokens: 300, ignore_eos: true }, (raw) => (raw.match(/"content":"[^"]/g) ?? []).length >= 2, ctl.signal);
    expect(await marks()).toHaveLength(1); // a re-run of this job must find it
    ctl.abort();
    await noMarks();
  }, 60_000);
});
