import { TINY } from '../helpers/model';
import { jobOutcome } from '../../services/api/submit';
import { postJson, startStack, type Stack } from '../helpers/stack';

/**
 * Completions wait for the worker's reply on the API's channel; the job's record in Redis is the fallback. A lost
 * pub/sub message cannot be caused for real, so the API here listens on a channel no worker is told about.
 */
describe('completion replies', () => {
  let s: Stack;
  beforeAll(async () => {
    s = await startStack(TINY);
  }, 60_000);
  afterAll(async () => {
    await s?.close();
  });

  const body = { prompt: 'hello there', max_tokens: 3, ignore_eos: true };

  test('the reply arrives on the API channel; Server-Timing names where the time went', async () => {
    const r = await postJson(s.base, '/v1/completions', body);
    expect(r.status).toBe(200);
    expect(r.body.usage.completion_tokens).toBe(3);
    const timing = r.headers.get('server-timing') ?? '';
    for (const part of ['total', 'api', 'queue', 'prefill', 'decode', 'worker', 'reply']) expect(timing).toMatch(new RegExp(`(^|, )${part};dur=\\d+\\.\\d{3}`));
    // `total` spans the request in the API (arrival to response): it holds the API's own part and the worker's compute.
    const dur = (part: string) => Number(new RegExp(`${part};dur=([\\d.]+)`).exec(timing)![1]);
    expect(dur('total')).toBeGreaterThanOrEqual(dur('api') + dur('prefill') + dur('decode'));
    expect(s.deps.replies!.pending).toBe(0);
  });

  test('without a reply (lost message) the answer still comes, from the job\'s record, after the grace period', async () => {
    const replies = s.deps.replies!;
    const real = replies.channel;
    // Jobs now name a channel nobody subscribed to: the worker's reply is lost.
    Object.defineProperty(replies, 'channel', { value: `${real}:nobody`, configurable: true });
    try {
      const t0 = Date.now();
      const r = await postJson(s.base, '/v1/completions', body);
      expect(r.status).toBe(200);
      expect(r.body.usage.completion_tokens).toBe(3);
      expect(Date.now() - t0).toBeGreaterThanOrEqual(900);
      expect(replies.pending).toBe(0);
    } finally {
      Object.defineProperty(replies, 'channel', { value: real, configurable: true });
    }
  }, 30_000);

  test('a job whose data fails the worker\'s schema fails at once (no retries) and its waiting clients hear why', async () => {
    const d = s.deps;
    const id = `bad-${Date.now()}`;
    const reply = d.replies!.wait(id);
    const events: string[] = [];
    const channel = d.keys.stream(id);
    const onMessage = (ch: string, msg: string) => void (ch === channel && events.push(msg));
    d.subscriber.on('message', onMessage);
    await d.subscriber.subscribe(channel);
    try {
      // What no API of this version enqueues: r = 0 (the API refuses it with a 400).
      const request = { id, chunks: [[5, 6, 7]], question: [8], maxTokens: 2, mode: { mode: 'cacheblend', r: 0 } };
      const job = await d.inference.add('request', { tenant: 'default', request, stream: true, replyTo: d.replies!.channel }, { jobId: id, attempts: 3 });
      await expect(reply.promise).rejects.toThrow(/invalid job data: request\.mode\.r/);
      for (let i = 0; i < 50 && !events.length; i++) await new Promise((r) => setTimeout(r, 20));
      expect(events.map((e) => JSON.parse(e))).toEqual([{ done: true, error: expect.stringMatching(/invalid job data/) }]);
      await expect(jobOutcome(d.inference, job.id!, 5000)).rejects.toThrow(/invalid job data/);
      const after = await d.inference.getJob(id);
      expect([await after!.getState(), after!.attemptsMade]).toEqual(['failed', 1]);
    } finally {
      reply.cancel();
      d.subscriber.off('message', onMessage);
      await d.subscriber.unsubscribe(channel);
    }
  });
});
