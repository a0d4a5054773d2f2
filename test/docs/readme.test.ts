/**
 * The README's "Try it" examples, run as written (real curl, through bash) against the real services with the default
 * model, answer what the README prints (issue #21, bug 7). The commands and the answers are read from README.md itself,
 * so the two cannot drift: a line `# → … "text": "<answer>"` after a command is the answer's text (a completion's
 * choices[0].text; a job's first result's text once GET /v1/jobs/<id> says it completed).
 */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { waitFor } from '../helpers/net';
import { httpJson, ProcStack, RedisServer, ROOT } from '../faults/procs';

const run = promisify(execFile);

interface Example {
  /** The command as the README writes it (continuation lines joined). */
  command: string;
  /** The answer's text the README prints after it, if any. */
  expected?: string;
}

/** The shell block after "Try it": its curl commands, each with the answer printed after it. */
export function tryItExamples(readme: string): Example[] {
  const at = readme.indexOf('Try it');
  if (at < 0) throw new Error('README.md has no "Try it" paragraph');
  const block = /```bash\n([\s\S]*?)```/.exec(readme.slice(at));
  if (!block) throw new Error('README.md has no bash block after "Try it"');
  const examples: Example[] = [];
  const lines = block[1].split('\n');
  for (let i = 0; i < lines.length; i++) {
    let line = lines[i];
    const answer = /^#\s*→.*"text":\s*("(?:[^"\\]|\\.)*")\s*$/.exec(line);
    if (answer) {
      const last = examples.at(-1);
      if (!last || last.expected !== undefined) throw new Error(`README: an answer with no command before it: ${line}`);
      last.expected = JSON.parse(answer[1]);
      continue;
    }
    if (!line.startsWith('curl ')) continue;
    while (line.endsWith('\\')) line = `${line.slice(0, -1).trimEnd()} ${lines[++i].trim()}`;
    examples.push({ command: line.replace(/\s+#.*$/, '') });
  }
  return examples;
}

describe('README "Try it"', () => {
  const examples = tryItExamples(readFileSync(join(ROOT, 'README.md'), 'utf8'));
  let redis: RedisServer;
  let s: ProcStack;
  beforeAll(async () => {
    redis = await RedisServer.start();
    // The services as npm start runs them, with the default model.
    s = await ProcStack.start({ redis, services: ['api', 'worker', 'precompute'], env: { MODEL_DIR: join(ROOT, 'models', 'epic-qa') } });
  }, 90_000);
  afterAll(async () => {
    await s?.close();
    await redis?.stop();
  });

  test('the README prints answers for its completions and its job', () => {
    expect(examples.filter((e) => e.command.includes('/v1/completions')).every((e) => e.expected !== undefined)).toBe(true);
    expect(examples.filter((e) => e.command.includes('/v1/jobs')).every((e) => e.expected !== undefined)).toBe(true);
    expect(examples.filter((e) => e.expected !== undefined).length).toBeGreaterThanOrEqual(2);
  });

  test('every example, in order, answers as the README says', async () => {
    const seen: { command: string; expected?: string; got?: string }[] = [];
    for (const ex of examples) {
      const command = ex.command.replace(/\blocalhost:8080\b/g, `127.0.0.1:${s.apiPort}`);
      // -sS: no progress meter; -w: the status on a line of its own after the body.
      const { stdout } = await run('bash', ['-c', `${command.replace(/^curl /, "curl -sS -w '\\n%{http_code}' ")}`], { timeout: 30_000 });
      const status = Number(stdout.slice(stdout.lastIndexOf('\n') + 1));
      const body = JSON.parse(stdout.slice(0, stdout.lastIndexOf('\n')));
      expect({ command: ex.command, ok: status >= 200 && status < 300 }).toEqual({ command: ex.command, ok: true });
      let got: string | undefined;
      if (ex.command.includes('/v1/completions')) got = body.choices[0].text;
      if (/\/v1\/jobs['"\s]/.test(`${ex.command} `)) {
        const done = await waitFor(async () => {
          const r = await httpJson(s.base, 'GET', `/v1/jobs/${body.id}`);
          return r.body?.status === 'completed' ? r.body : undefined;
        }, 30_000, `job ${body.id}`);
        got = done.results[0].result.text;
      }
      if (ex.command.includes('/v1/models')) expect(body.data[0].id).toBe('epic-qa');
      if (/\/v1\/documents\/\w+/.test(ex.command)) expect(body).toMatchObject({ chunks: expect.any(Number), tokens: expect.any(Number), warm_chunks: expect.any(Number) });
      seen.push({ command: ex.command, expected: ex.expected, got: ex.expected === undefined ? undefined : got });
    }
    console.log(`README "Try it":\n${seen.map((x) => `${x.command}${x.expected !== undefined ? `\n  → ${JSON.stringify(x.got)}` : ''}`).join('\n')}`);
    expect(seen.map((x) => x.got)).toEqual(seen.map((x) => x.expected));
  }, 90_000);
});
