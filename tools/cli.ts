#!/usr/bin/env node
/**
 * epic-serve CLI: ingest a folder of documents and run a batch of requests from a JSONL file against the REST API.
 *
 *   npm run cli -- ingest <folder> [--api URL] [--key KEY] [--ext .txt,.md] [--wait] [--timeout S] [--json]
 *   npm run cli -- batch <requests.jsonl> [--api URL] [--key KEY] [--out results.jsonl] [--mode M] [--k K] [--timeout S]
 *
 * Progress bars go to stderr (only on a terminal); the final summary goes to stdout.
 * Exit codes: 0 ok, 1 error (API unreachable, HTTP error, timeout), 2 bad usage or input, 3 some documents or
 * requests failed (the summary and results file are still written), 130 interrupted.
 */
import { parseArgs } from 'node:util';
import { ApiClient, DEFAULT_API } from './cli/api';
import { batch } from './cli/batch';
import { CliError, EXIT, usageError } from './cli/errors';
import { parseExtensions } from './cli/files';
import { ingest } from './cli/ingest';
import { installInterruptHandler } from './cli/progress';

export const USAGE = `usage:
  npm run cli -- ingest <folder> [options]
      POST every text file under <folder> (recursively, sorted) as a document; the id is the relative path with
      every run of characters outside [A-Za-z0-9_-] turned into _ (notes/mira.txt → notes_mira_txt).
      --ext .txt,.md     file name endings to ingest (default .txt,.md)
      --wait             wait until every chunk is precomputed (warm)
      --timeout S        give up waiting after S seconds (default 600)
      --json             print the summary as JSON
  npm run cli -- batch <requests.jsonl> [options]
      Submit one job with one request per line ({"documents": [ids or paths], "question": "…", "max_tokens": 16,
      "mode": "attnlink", "k": 16, "r": 0.3}), follow its progress and write one result per line.
      --out FILE         results JSONL (default <input without .jsonl>.results.jsonl beside the input)
      --mode M           set the link mode of every request (full, prefix, naive, attnlink, attnlink0, cacheblend)
      --k K              set k of every request
      --timeout S        stop following after S seconds (default: no limit; the job keeps running)
common options:
  --api URL            the API (default $EPIC_API_URL or ${DEFAULT_API})
  --key KEY            API key sent as Authorization: Bearer (default $EPIC_API_KEY)
  -h, --help           this help
`;

const OPTIONS = {
  api: { type: 'string' },
  key: { type: 'string' },
  ext: { type: 'string' },
  wait: { type: 'boolean' },
  json: { type: 'boolean' },
  timeout: { type: 'string' },
  out: { type: 'string' },
  mode: { type: 'string' },
  k: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

const ONLY: Record<string, string[]> = { ingest: ['ext', 'wait', 'json'], batch: ['out', 'mode', 'k'] };

function parse(argv: string[]) {
  try {
    return parseArgs({ args: argv, options: OPTIONS, allowPositionals: true, strict: true });
  } catch (e) {
    throw usageError(`${(e as Error).message.split('\n')[0]}\n\n${USAGE}`);
  }
}

function seconds(v: string | undefined, name: string, dflt: number): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0) throw usageError(`${name}: expected a number of seconds, got ${JSON.stringify(v)}`);
  return n * 1000;
}

/** Run the CLI; resolves to the exit code. Output goes to `stdout` (the summary) and stderr (progress, errors). */
export async function main(argv: string[], env: NodeJS.ProcessEnv = process.env, stdout: (s: string) => void = (s) => process.stdout.write(s)): Promise<number> {
  try {
    const { values: v, positionals } = parse(argv);
    const [command, target, ...extra] = positionals;
    if (v.help || !command || command === 'help') {
      stdout(USAGE);
      return command || v.help ? EXIT.ok : EXIT.usage;
    }
    if (command !== 'ingest' && command !== 'batch') throw usageError(`unknown command ${JSON.stringify(command)}\n\n${USAGE}`);
    if (!target) throw usageError(`${command}: missing ${command === 'ingest' ? '<folder>' : '<requests.jsonl>'}\n\n${USAGE}`);
    if (extra.length) throw usageError(`${command}: unexpected argument ${JSON.stringify(extra[0])}`);
    const other = command === 'ingest' ? 'batch' : 'ingest';
    for (const o of ONLY[other]) if ((v as Record<string, unknown>)[o] !== undefined) throw usageError(`--${o} is an option of ${other}, not ${command}`);

    const api = new ApiClient(v.api ?? (env.EPIC_API_URL || DEFAULT_API), v.key ?? (env.EPIC_API_KEY || undefined));
    installInterruptHandler();
    if (command === 'ingest') {
      const r = await ingest(api, {
        folder: target,
        exts: parseExtensions(v.ext ?? '.txt,.md'),
        wait: v.wait ?? false,
        timeoutMs: seconds(v.timeout, '--timeout', 600),
        json: v.json ?? false,
      });
      stdout(`${r.summary}\n`);
      return r.code;
    }
    let k: number | undefined;
    if (v.k !== undefined) {
      k = Number(v.k);
      if (!Number.isInteger(k) || k < 0) throw usageError(`--k: expected a non-negative integer, got ${JSON.stringify(v.k)}`);
    }
    if (v.mode !== undefined && !v.mode.trim()) throw usageError('--mode: empty');
    const r = await batch(api, { input: target, out: v.out, mode: v.mode, k, timeoutMs: seconds(v.timeout, '--timeout', 0) });
    stdout(`${r.summary}\n`);
    return r.code;
  } catch (e) {
    if (e instanceof CliError) {
      process.stderr.write(`error: ${e.message}\n`);
      return e.code;
    }
    process.stderr.write(`error: ${(e as Error)?.stack ?? String(e)}\n`);
    return EXIT.error;
  }
}

if (require.main === module) {
  void main(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  });
}
