import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TINY } from '../helpers/model';
import { freePort } from '../helpers/net';
import { getJson, startStack, type Stack } from '../helpers/stack';

const ROOT = join(__dirname, '..', '..');
const TSX = require.resolve('tsx/cli');

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** The CLI as a real child process (tsx), with EPIC_* variables only as given. */
function cli(args: string[], env: Record<string, string> = {}): Promise<Run> {
  const base = { ...process.env };
  delete base.EPIC_API_URL;
  delete base.EPIC_API_KEY;
  return new Promise((resolve) => {
    execFile(process.execPath, [TSX, join(ROOT, 'tools', 'cli.ts'), ...args], { cwd: ROOT, env: { ...base, ...env }, timeout: 60_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

const FILES: Record<string, string> = {
  'people/mira.txt': 'Mira lives in the city . she works for the company . her city is on the river .',
  'people/tom smith.md': 'Tom was born in the city . he works at the company with his sister .',
  'companies/acme.txt': 'the company is in the city . it was born from a company of the city .',
  'a b.txt': 'this is what the city is : a city of the company .',
  'a_b.txt': 'that is where they live , and who they are .',
  'empty.txt': '   \n',
  'notes.csv': 'not, ingested',
  '.hidden/secret.txt': 'hidden files are skipped .',
};

describe('CLI: ingest a folder and run a JSONL batch against the real pipeline', () => {
  let s: Stack;
  let dir: string;
  beforeAll(async () => {
    s = await startStack(TINY);
    dir = mkdtempSync(join(tmpdir(), 'epic-cli-'));
    for (const [rel, text] of Object.entries(FILES)) {
      mkdirSync(join(dir, 'docs', rel, '..'), { recursive: true });
      writeFileSync(join(dir, 'docs', rel), text);
    }
  }, 60_000);
  afterAll(async () => {
    await s?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const expected: [string, string][] = [
    ['a b.txt', 'a_b_txt'],
    ['a_b.txt', 'a_b_txt-2'],
    ['companies/acme.txt', 'companies_acme_txt'],
    ['people/mira.txt', 'people_mira_txt'],
    ['people/tom smith.md', 'people_tom_smith_md'],
  ];

  test('ingest --wait posts every text file (sorted, ids from paths), reports chunks, and ends with every chunk warm', async () => {
    const r = await cli(['ingest', join(dir, 'docs'), '--api', s.base, '--wait']);
    expect(r.stderr).not.toMatch(/error/);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/ingested 5 of 6 files/);
    expect(r.stdout).toMatch(/all \d+ chunks warm/);
    expect(r.stdout).toMatch(/empty_txt +empty\.txt +\(skipped: empty\)/);
    expect(r.stdout).not.toMatch(/notes|secret/);
    const rows = r.stdout.split('\n').filter((l) => /^ +\d+ +\d+ +\S+ +\S/.test(l));
    expect(rows.map((l) => l.trim().split(/ +/)[2])).toEqual(expected.map(([, id]) => id));
    for (const [path, id] of expected) {
      const d = await getJson(s.base, `/v1/documents/${id}`);
      expect(d.status).toBe(200);
      expect(d.body.chunks).toBeGreaterThan(0);
      expect(d.body.warm_chunks).toBe(d.body.chunks);
      expect(d.body.metadata.path).toBe(path);
      expect(r.stdout).toMatch(new RegExp(`^ +${d.body.chunks} +${d.body.chunks} +${id} +${path}$`, 'm'));
    }
    expect((await getJson(s.base, '/v1/documents/empty_txt')).status).toBe(404);
  }, 30_000);

  test('batch submits one job, follows it and writes one ok result per request beside the input', async () => {
    const input = join(dir, 'requests.jsonl');
    const reqs = [
      { documents: ['people/mira.txt', 'companies_acme_txt'], question: 'where does she live ?', max_tokens: 4 },
      { documents: ['people/tom smith.md'], question: 'where was he born ?', max_tokens: 3, mode: 'full' },
      { documents: ['a_b_txt', 'a_b_txt-2'], prompt: 'what is the city ?', max_tokens: 2 },
      { documents: [{ text: 'the city of the company .' }], question: 'what is it ?', max_tokens: 2 },
      { question: 'who works at the company ?', max_tokens: 2 },
    ];
    writeFileSync(input, reqs.map((x) => JSON.stringify(x)).join('\n\n') + '\n');
    const r = await cli(['batch', input, '--api', s.base]);
    expect(r.stderr).not.toMatch(/error/);
    expect(r.code).toBe(0);
    const out = join(dir, 'requests.results.jsonl');
    expect(r.stdout).toMatch(/job job_\w+ completed: 5 of 5 requests ok, 0 failed/);
    expect(r.stdout.trim().split('\n').pop()).toBe(`results: ${out}`);
    const lines = readFileSync(out, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(lines).toHaveLength(reqs.length);
    lines.forEach((l, i) => {
      expect(l).toMatchObject({ index: i, line: 2 * i + 1, ok: true });
      expect(typeof l.text).toBe('string');
      expect(l.usage.completion_tokens).toBeGreaterThan(0);
      expect(l.usage.prompt_tokens).toBeGreaterThan(0);
    });
    expect(lines[1].mode).toBe('full');

    // --mode / --k / --out apply to every request.
    const out2 = join(dir, 'out', 'full.jsonl');
    mkdirSync(join(dir, 'out'));
    const r2 = await cli(['batch', input, '--out', out2, '--mode', 'attnlink', '--k', '2'], { EPIC_API_URL: s.base });
    expect(r2.code).toBe(0);
    expect(r2.stdout).toContain(`results: ${out2}`);
    const lines2 = readFileSync(out2, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(lines2).toHaveLength(reqs.length);
    // (a request without documents has nothing to link: the worker runs it in full)
    expect(lines2.map((l) => [l.ok, l.mode])).toEqual(reqs.map((q) => [true, q.documents ? 'attnlink-2' : 'full']));
  }, 30_000);

  test('clear errors and non-zero exits: unreachable API, bad JSONL lines, refused requests, missing key', async () => {
    const dead = `http://127.0.0.1:${await freePort()}`;
    const badJson = join(dir, 'bad.jsonl');
    writeFileSync(badJson, '{"question": "the city", "max_tokens": 2}\n{"question": \n[1]\n{"documents": ["people_mira_txt"]}\n');
    const unknown = join(dir, 'unknown.jsonl');
    writeFileSync(unknown, '{"question": "the city", "max_tokens": 2}\n\n{"documents": ["no/such.txt"], "question": "the city"}\n');
    const [down, bad, refused, usage] = await Promise.all([
      cli(['batch', unknown, '--api', dead]),
      cli(['batch', badJson, '--api', s.base]),
      cli(['batch', unknown, '--api', s.base]),
      cli(['ingest', join(dir, 'nope'), '--api', s.base]),
    ]);
    expect(down.code).toBe(1);
    expect(down.stderr).toContain(`cannot reach the API at ${dead}`);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain(`${badJson}:2: not valid JSON`);
    expect(bad.stderr).toContain(`${badJson}:3: expected a JSON object`);
    expect(bad.stderr).toContain(`${badJson}:4: a request needs a "question" or a "prompt"`);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain(`unknown document id "no_such_txt" (${unknown}:3)`);
    expect(usage.code).toBe(2);
    expect(usage.stderr).toContain('no such folder');
    for (const r of [down, bad, refused, usage]) expect(r.stdout).toBe('');

    s.deps.apiKeys.set('sk-cli-test', 'default');
    try {
      const [noKey, withKey] = await Promise.all([
        cli(['ingest', join(dir, 'docs', 'companies'), '--api', s.base]),
        cli(['ingest', join(dir, 'docs', 'companies'), '--api', s.base], { EPIC_API_KEY: 'sk-cli-test' }),
      ]);
      expect(noKey.code).toBe(1);
      expect(noKey.stderr).toMatch(/HTTP 401: missing or invalid API key.*pass --key or set EPIC_API_KEY/);
      expect(withKey.code).toBe(0);
      expect(withKey.stdout).toMatch(/^ +1 +acme_txt +acme\.txt$/m);
    } finally {
      s.deps.apiKeys.clear();
    }
  }, 30_000);
});
