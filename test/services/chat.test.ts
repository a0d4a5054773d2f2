import { completionStream, post } from '../helpers/sse';
import { startStack, type Stack } from '../helpers/stack';
import { pipelineModel } from '../helpers/workload';

describe('stop strings, sampling and chat through the API (default model)', () => {
  let s: Stack;
  beforeAll(async () => {
    s = await startStack(pipelineModel());
  }, 60_000);
  afterAll(async () => {
    await s?.close();
  });

  // Issue #21, bug 1: the stream went on past the stop string (" .", " year", " Sider", " 2002", " ."), and the plain
  // answer counted 6 completion tokens with decoding run past the stop.
  const repro = {
    prompt: 'city Sider',
    documents: [{ text: 'city Sider Zezebiia . Sider always visits the museum with friends . employer Sider Rolagen .' }],
    mode: 'full',
    max_tokens: 6,
    stop: ['.'],
  };

  test('#21 bug 1: a stream sends nothing at or past a stop string; usage counts only the tokens returned', async () => {
    // Without the stop string: where "." comes in the model's answer (the test needs it inside the 6 tokens).
    const free = await post(s.base, '/v1/completions', { ...repro, stop: undefined });
    expect(free.status).toBe(200);
    const freeText: string = free.json.choices[0].text;
    expect(freeText).toContain('.');
    const plain = await post(s.base, '/v1/completions', repro);
    expect(plain.status).toBe(200);
    const text: string = plain.json.choices[0].text;
    expect(text).toBe(freeText.slice(0, freeText.indexOf('.')));
    expect(plain.json.choices[0].finish_reason).toBe('stop');
    expect(plain.json.usage.completion_tokens).toBeLessThan(6);
    const streamed = await post(s.base, '/v1/completions', { ...repro, stream: true, stream_options: { include_usage: true } });
    expect(streamed.status).toBe(200);
    const st = completionStream(streamed.events!);
    for (const p of st.pieces) expect(p).not.toContain('.');
    expect(st.pieces.join('')).toBe(text);
    expect(st.finish).toBe('stop');
    expect(st.usage.completion_tokens).toBe(plain.json.usage.completion_tokens);
  });

  test('a stop string of several characters split across tokens is never streamed, even in part', async () => {
    const free = await post(s.base, '/v1/completions', { ...repro, stop: undefined, max_tokens: 8 });
    const freeText: string = free.json.choices[0].text;
    // Two characters each side of the first token boundary inside the text (the pieces of a plain stream).
    const st0 = completionStream((await post(s.base, '/v1/completions', { ...repro, stop: undefined, max_tokens: 8, stream: true })).events!);
    expect(st0.pieces.join('')).toBe(freeText);
    const at = st0.pieces[0].length + st0.pieces[1].length;
    const stop = freeText.slice(at - 2, at + 2);
    expect(stop.length).toBe(4);
    const cut = freeText.indexOf(stop);
    const plain = await post(s.base, '/v1/completions', { ...repro, stop: [stop], max_tokens: 8 });
    expect(plain.json.choices[0].text).toBe(freeText.slice(0, cut));
    const st = completionStream((await post(s.base, '/v1/completions', { ...repro, stop: [stop], max_tokens: 8, stream: true })).events!);
    expect(st.pieces.join('')).toBe(freeText.slice(0, cut));
    expect(st.pieces.join('')).not.toContain(stop.slice(0, 2));
  });

  test('sampling: a seed reproduces its reply; temperature 0 is the greedy reply; seeds differ', async () => {
    const body = { prompt: 'city Sider', documents: repro.documents, max_tokens: 8, ignore_eos: true };
    const greedy = (await post(s.base, '/v1/completions', body)).json.choices[0].text;
    expect((await post(s.base, '/v1/completions', { ...body, temperature: 0, seed: 5 })).json.choices[0].text).toBe(greedy);
    const sampled = { ...body, temperature: 1.5, top_p: 0.98, top_k: 100 };
    const a = await post(s.base, '/v1/completions', { ...sampled, seed: 1234 });
    const b = await post(s.base, '/v1/completions', { ...sampled, seed: 1234 });
    expect(a.status).toBe(200);
    expect(b.json.choices[0].text).toBe(a.json.choices[0].text);
    const texts = new Set<string>([greedy, a.json.choices[0].text]);
    for (const seed of [1, 2, 3]) texts.add((await post(s.base, '/v1/completions', { ...sampled, seed })).json.choices[0].text);
    expect(texts.size).toBeGreaterThan(2);
    // Streamed with the same seed: the same text.
    const st = completionStream((await post(s.base, '/v1/completions', { ...sampled, seed: 1234, stream: true })).events!);
    expect(st.pieces.join('')).toBe(a.json.choices[0].text);
    // Bad sampling values are refused before anything is enqueued.
    expect((await post(s.base, '/v1/completions', { ...body, temperature: -1 })).status).toBe(400);
    expect((await post(s.base, '/v1/completions', { ...body, top_k: 1.5 })).status).toBe(400);
  });

  test('sampling fields travel in /v1/jobs requests too', async () => {
    const req = { documents: repro.documents, question: 'city Sider', max_tokens: 6, ignore_eos: true, temperature: 1.5, seed: 99 };
    const r = await post(s.base, '/v1/jobs', { requests: [req, req, { ...req, seed: 100 }] });
    expect(r.status).toBe(202);
    let job: any;
    for (let i = 0; i < 200; i++) {
      job = await (await fetch(`${s.base}/v1/jobs/${r.json.id}`)).json();
      if (job.status === 'completed') break;
      await new Promise((res) => setTimeout(res, 50));
    }
    expect(job.status).toBe('completed');
    const texts = [...job.results].sort((x: any, y: any) => x.index - y.index).map((x: any) => x.result.text);
    const one = await post(s.base, '/v1/completions', { prompt: 'city Sider', documents: repro.documents, max_tokens: 6, ignore_eos: true, temperature: 1.5, seed: 99 });
    expect(texts[0]).toBe(one.json.choices[0].text);
    expect(texts[1]).toBe(texts[0]);
  });

  test('chat without a chat template keeps the joined contents as the question (the toy models)', async () => {
    const chat = await post(s.base, '/v1/chat/completions', { messages: [{ role: 'user', content: 'city Sider' }], documents: repro.documents, max_tokens: 4, mode: 'full' });
    const cmpl = await post(s.base, '/v1/completions', { prompt: 'city Sider', documents: repro.documents, max_tokens: 4, mode: 'full' });
    expect(chat.json.choices[0].message.content).toBe(cmpl.json.choices[0].text);
    expect(chat.json.usage.prompt_tokens).toBe(cmpl.json.usage.prompt_tokens);
  });
});
