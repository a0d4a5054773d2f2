/**
 * node --import tsx bench/peer/greedy.ts --gguf FILE [--threads 2 --kv F32 --steps 8 --top 10 --flash-attention auto|on|off] < prompts.json
 *
 * Runs prompts (a JSON array of token-id arrays on stdin) through llama.cpp (bench/peer/llamacpp.ts), each from an
 * empty sequence, and prints one JSON array: per prompt the greedy tokens (`steps` of them) and the natural-log
 * probabilities of the top tokens after the prompt. test/import/gguf.test.ts runs it in a child process (node-llama-cpp
 * is an ES module with top-level await, which Jest's CommonJS runtime cannot load).
 */
import { parseArgs } from 'node:util';
import { LlamaCppPeer } from './llamacpp';

async function readStdin(): Promise<string> {
  const parts: Buffer[] = [];
  for await (const c of process.stdin) parts.push(c as Buffer);
  return Buffer.concat(parts).toString('utf8');
}

async function main() {
  const { values } = parseArgs({
    options: {
      gguf: { type: 'string' },
      threads: { type: 'string' },
      kv: { type: 'string' },
      steps: { type: 'string' },
      top: { type: 'string' },
      'context-size': { type: 'string' },
      'flash-attention': { type: 'string' },
    },
  });
  if (!values.gguf) throw new Error('--gguf FILE is required');
  const prompts = JSON.parse(await readStdin()) as number[][];
  const steps = Number(values.steps ?? 8);
  const top = Number(values.top ?? 10);
  const longest = Math.max(...prompts.map((p) => p.length));
  const peer = await LlamaCppPeer.load(values.gguf, {
    threads: Number(values.threads ?? 2),
    contextSize: Number(values['context-size'] ?? Math.max(256, longest + steps + 8)),
    kvType: values.kv === 'F16' ? 'F16' : 'F32',
    flashAttention: ({ on: true, off: false } as Record<string, boolean>)[values['flash-attention'] ?? ''] ?? 'auto',
  });
  const out = [];
  for (const p of prompts) {
    await peer.clear();
    const first = await peer.prompt(p, top);
    const tokens = await peer.decode(first.token, steps);
    out.push({ tokens, top: first.top });
  }
  await peer.dispose();
  process.stdout.write(JSON.stringify(out) + '\n');
}

main().catch((e) => {
  process.stderr.write(`greedy: ${e instanceof Error ? e.stack : String(e)}\n`);
  process.exit(1);
});
