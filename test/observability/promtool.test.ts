import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { sampleRegistry } from './fixtures';
import { findPromtool } from './prometheus';
import { REPO } from './promql';

/**
 * promtool (Debian's `prometheus` package; `.ci/run` installs it) checks the scrape configs and lints the text
 * exposition of every metric the project defines. Skipped, saying so, only where promtool is absent.
 */
const promtool = findPromtool();
const SKIP = 'SKIPPED: promtool not found (apt-get install prometheus, or set PROMTOOL_BIN)';
const it = promtool ? test : test.skip;
if (!promtool) console.warn(`test/observability/promtool.test.ts: ${SKIP}`);

function run(args: string[], input?: string) {
  const r = spawnSync(promtool!, args, { input, encoding: 'utf8', cwd: REPO });
  return { code: r.status, out: `${r.stdout ?? ''}${r.stderr ?? ''}` };
}

describe(promtool ? 'promtool' : `promtool — ${SKIP}`, () => {
  it.each(['infra/prometheus.yml', 'infra/prometheus.docker.yml'])('promtool check config %s', (file) => {
    const r = run(['check', 'config', path.join(REPO, file)]);
    expect(r.out).toContain('SUCCESS');
    expect(r.code).toBe(0);
  });

  it('promtool check metrics passes on every project metric after traffic', async () => {
    const { registry, tick } = sampleRegistry('worker');
    tick();
    const text = await registry.metrics();
    // sanity: the exposition holds the families the dashboards read
    for (const name of ['epic_time_to_first_token_seconds_bucket', 'epic_kv_chunk_lookups_total', 'epic_queue_jobs', 'epic_errors_total', 'epic_process_cpu_seconds_total']) {
      expect(text).toContain(`\n${name}{`);
    }
    const r = run(['check', 'metrics'], text);
    expect(r.out.trim()).toBe('');
    expect(r.code).toBe(0);
  });

  it('promtool check metrics does reject a badly named metric (the check is live)', () => {
    const r = run(['check', 'metrics'], '# HELP epic_latency_ms latency\n# TYPE epic_latency_ms counter\nepic_latency_ms 1\n');
    expect(r.code).not.toBe(0);
    expect(r.out).toMatch(/_total|base unit/);
  });
});
