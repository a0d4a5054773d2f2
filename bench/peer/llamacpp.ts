/**
 * llama.cpp through node-llama-cpp, as a Node user runs it: one model, one context, one sequence reused across
 * prompts. Prompts are token ids. Its CPU build is the prebuilt addon in @node-llama-cpp/linux-x64 (gpu off, build
 * 'never', no download): nothing is compiled or fetched at install or first use.
 *
 * Reuse is llama.cpp's own: a new prompt keeps the sequence's KV for the prefix it shares with what the sequence holds
 * (the previous prompt and its answer) and evaluates the rest, as llama-server's prompt cache does. node-llama-cpp's
 * context shift (keeping later matching tokens at moved positions) is not used: it changes what those tokens attended
 * to, so it is not the same computation.
 *
 * node-llama-cpp is an ES module with top-level await; this project is CommonJS, so it is loaded with a dynamic import
 * (tsx keeps it one).
 */
import type { LlamaContext, LlamaContextSequence, LlamaModel, Llama, Token } from 'node-llama-cpp';

type NodeLlamaCpp = typeof import('node-llama-cpp');

export interface PeerOptions {
  threads: number;
  contextSize: number;
  /** KV cache element type: llama.cpp's default F16, or F32 (the agreement test: our KV is float32). */
  kvType?: 'F16' | 'F32';
  /** Tokens per llama_decode call (node-llama-cpp's default 512). */
  batchSize?: number;
  /** 'auto' (node-llama-cpp's default: on where the backend has it), true or false. */
  flashAttention?: 'auto' | boolean;
}

export interface Step {
  /** The next token, greedy. */
  token: number;
  /** Milliseconds from the call to the next token. */
  ms: number;
  /** Tokens evaluated (the prompt's tokens past the reused prefix). */
  evaluated: number;
  /** Tokens whose KV was kept from the sequence. */
  reused: number;
  /** Natural-log probabilities of the top tokens (topLogprobs > 0). */
  top?: [number, number][];
}

export class LlamaCppPeer {
  private constructor(
    readonly llama: Llama,
    readonly model: LlamaModel,
    readonly context: LlamaContext,
    readonly sequence: LlamaContextSequence,
    readonly options: PeerOptions,
  ) {}

  static async load(ggufPath: string, options: PeerOptions): Promise<LlamaCppPeer> {
    const { getLlama, LlamaLogLevel } = (await import('node-llama-cpp')) as NodeLlamaCpp;
    const llama = await getLlama({
      gpu: false,
      build: 'never',
      usePrebuiltBinaries: true,
      skipDownload: true,
      progressLogs: false,
      logLevel: LlamaLogLevel.error,
      maxThreads: options.threads,
    });
    const model = await llama.loadModel({ modelPath: ggufPath, gpuLayers: 0, useMmap: true });
    const context = await model.createContext({
      contextSize: options.contextSize,
      threads: { ideal: options.threads, min: options.threads },
      batchSize: options.batchSize,
      flashAttention: options.flashAttention ?? 'auto',
      experimentalKvCacheKeyType: options.kvType ?? 'F16',
      experimentalKvCacheValueType: options.kvType ?? 'F16',
    });
    return new LlamaCppPeer(llama, model, context, context.getSequence(), options);
  }

  /** Drop everything the sequence holds (the next prompt is computed cold). */
  async clear(): Promise<void> {
    await this.sequence.clearHistory();
  }

  /**
   * Evaluate `prompt` on the sequence, keeping the KV of the prefix it shares with what the sequence holds, and choose
   * the next token greedily. At least the last prompt token is evaluated (its logits give the next token).
   */
  async prompt(prompt: number[], topLogprobs = 0): Promise<Step> {
    const t0 = performance.now();
    const seq = this.sequence;
    await seq.adaptStateToTokens(prompt as Token[], false);
    let kept = seq.nextTokenIndex;
    if (kept >= prompt.length) {
      await seq.eraseContextTokenRanges([{ start: prompt.length - 1, end: seq.nextTokenIndex }]);
      kept = prompt.length - 1;
    }
    const rest = prompt.slice(kept) as Token[];
    const step = await this.evaluate(rest, topLogprobs);
    return { ...step, ms: performance.now() - t0, evaluated: rest.length, reused: kept };
  }

  /** Append `token` and choose the one after it (a decode step). */
  async next(token: number, topLogprobs = 0): Promise<Step> {
    const t0 = performance.now();
    const step = await this.evaluate([token as Token], topLogprobs);
    return { ...step, ms: performance.now() - t0, evaluated: 1, reused: this.sequence.nextTokenIndex - 1 };
  }

  /** Greedy decode of n tokens after a prompt whose next token is `first`; the tokens (first included). */
  async decode(first: number, n: number): Promise<number[]> {
    const out = [first];
    while (out.length < n) out.push((await this.next(out[out.length - 1])).token);
    return out;
  }

  private async evaluate(tokens: Token[], topLogprobs: number): Promise<{ token: number; top?: [number, number][] }> {
    const want = topLogprobs > 0;
    const input = [
      ...tokens.slice(0, -1),
      [tokens[tokens.length - 1], { generateNext: { token: true, probabilities: want, options: { temperature: 0 } } }] as const,
    ];
    // controlledEvaluate takes the options tuple as a mutable array type
    const out = await this.sequence.controlledEvaluate(input as Parameters<LlamaContextSequence['controlledEvaluate']>[0]);
    const next = out[out.length - 1]?.next;
    if (next?.token == null) throw new Error('llama.cpp returned no next token');
    const top = want ? [...next.probabilities!.entries()].slice(0, topLogprobs).map(([t, p]) => [t as number, Math.log(p)] as [number, number]) : undefined;
    return { token: next.token, top };
  }

  async dispose(): Promise<void> {
    await this.context.dispose();
    await this.model.dispose();
    await this.llama.dispose();
  }
}
