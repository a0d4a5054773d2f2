import type { Engine } from '../engine';
import type { GenerateJob, GenerateResult } from '../queue/contracts';

/** Cut text at the first stop string, if any. */
export function applyStop(text: string, stop: string[] | undefined): { text: string; stopped: boolean } {
  let cut = -1;
  for (const s of stop ?? []) {
    if (!s) continue;
    const i = text.indexOf(s);
    if (i >= 0 && (cut < 0 || i < cut)) cut = i;
  }
  return cut < 0 ? { text, stopped: false } : { text: text.slice(0, cut), stopped: true };
}

/** Serve one plain completion: full prefill, greedy decode. */
export async function generateCompletion(engine: Engine, job: GenerateJob): Promise<GenerateResult> {
  const t0 = performance.now();
  const prompt = engine.encodePrompt(job.prompt);
  const { cache, logits } = await engine.prefill([prompt], job.maxTokens);
  const ttftMs = performance.now() - t0;
  const out = await engine.generate(cache, logits, { maxTokens: job.maxTokens });
  const decoded = engine.tokenizer.decode(out.tokens[0]);
  const { text, stopped } = applyStop(decoded, job.stop);
  return {
    text,
    promptTokens: prompt.length,
    completionTokens: out.tokens[0].length,
    finishReason: stopped || out.finish[0] === 'stop' ? 'stop' : 'length',
    ttftMs,
    totalMs: performance.now() - t0,
  };
}
