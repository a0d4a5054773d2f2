/**
 * PromQL helpers for the observability tests: pull every query out of the Grafana dashboards, make them runnable
 * outside Grafana (substitute $__rate_interval & co.), and list the metric names a query uses.
 */
import { readdirSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import type { Registry } from 'prom-client';

export const REPO = path.join(__dirname, '..', '..');
export const DASHBOARD_DIR = path.join(REPO, 'grafana', 'dashboards');

export interface DashboardQuery {
  /** Dashboard file name. */
  dashboard: string;
  panel: string;
  refId: string;
  /** The expression as stored (Grafana variables not substituted). */
  expr: string;
}

interface PanelLike {
  title?: unknown;
  targets?: Array<{ expr?: unknown; refId?: unknown }>;
  panels?: PanelLike[];
}

/** Every PromQL expression of a dashboard (panels, and panels inside collapsed rows). */
export function dashboardQueries(dashboard: unknown, name = 'dashboard'): DashboardQuery[] {
  const out: DashboardQuery[] = [];
  const walk = (panels: PanelLike[] | undefined) => {
    for (const p of panels ?? []) {
      for (const t of p.targets ?? []) {
        if (typeof t.expr === 'string' && t.expr.trim()) {
          out.push({ dashboard: name, panel: String(p.title ?? ''), refId: String(t.refId ?? ''), expr: t.expr });
        }
      }
      walk(p.panels);
    }
  };
  walk((dashboard as { panels?: PanelLike[] }).panels);
  return out;
}

/** The dashboard JSON files of a folder, parsed. */
export function loadDashboards(dir = DASHBOARD_DIR): Array<{ file: string; json: unknown }> {
  return readdirSync(dir)
    .filter((f) => f.endsWith('.json'))
    .sort()
    .map((file) => ({ file, json: JSON.parse(readFileSync(path.join(dir, file), 'utf8')) as unknown }));
}

/** Every PromQL expression of every dashboard in a folder. */
export function loadDashboardQueries(dir = DASHBOARD_DIR): DashboardQuery[] {
  return loadDashboards(dir).flatMap(({ file, json }) => dashboardQueries(json, file));
}

export interface GrafanaVariables {
  /** $__rate_interval (default 1m). */
  rateInterval?: string;
  /** $__interval (default 15s). */
  interval?: string;
  /** $__range (default 1h). */
  range?: string;
  /** Any other dashboard variables by name. */
  vars?: Record<string, string>;
}

/** Substitutes Grafana's built-in variables so that Prometheus itself can run the expression. */
export function expandGrafanaVariables(expr: string, v: GrafanaVariables = {}): string {
  const values: Record<string, string> = {
    __rate_interval: v.rateInterval ?? '1m',
    __interval: v.interval ?? '15s',
    __range: v.range ?? '1h',
    __range_s: String(durationSeconds(v.range ?? '1h')),
    ...v.vars,
  };
  return expr.replace(/\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)/g, (m, a?: string, b?: string, c?: string) => {
    const name = a ?? b ?? c!;
    if (name in values) return values[name];
    throw new Error(`unknown Grafana variable ${m} in ${expr}`);
  });
}

function durationSeconds(d: string): number {
  const m = /^(\d+)(ms|s|m|h|d|w|y)$/.exec(d);
  if (!m) throw new Error(`bad duration ${d}`);
  const unit = { ms: 0.001, s: 1, m: 60, h: 3600, d: 86400, w: 604800, y: 31536000 }[m[2] as 'ms'];
  return Number(m[1]) * unit;
}

const KEYWORDS = new Set(['and', 'or', 'unless', 'bool', 'offset', 'by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'inf', 'nan', 'start', 'end', 'atan2']);

/**
 * The metric names an expression selects (`foo_bucket` stays `foo_bucket`). A small lexer, not a parser: strings,
 * label matchers, ranges, grouping clauses and function calls are removed, and what is left that looks like an
 * identifier is a metric name. `{__name__="x"}` selectors are reported as x.
 */
export function metricNames(expr: string): string[] {
  const names = new Set<string>();
  let s = expr;
  // __name__ matchers before strings are dropped
  for (const m of s.matchAll(/__name__\s*=\s*"([^"]+)"/g)) names.add(m[1]);
  s = s.replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, '""');
  s = s.replace(/\{[^}]*\}/g, ' ');
  s = s.replace(/\[[^\]]*\]/g, ' ');
  s = s.replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/gi, ' ');
  s = s.replace(/\boffset\s+-?[0-9a-z]+/gi, ' ');
  s = s.replace(/@\s*[^\s)]+/g, ' ');
  s = s.replace(/\$\{?\w+\}?/g, ' ');
  const token = /(\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?|0x[0-9a-fA-F]+|[a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?/g;
  for (const m of s.matchAll(token)) {
    const [, word, call] = m;
    if (/^[0-9.]/.test(word) || call) continue; // a number, or a function / aggregation
    if (KEYWORDS.has(word.toLowerCase())) continue;
    names.add(word);
  }
  return [...names].sort();
}

/**
 * The series names a registry exposes: counters and gauges by name, histograms as `_bucket`, `_sum`, `_count`,
 * summaries as the name, `_sum`, `_count`.
 */
export async function seriesNames(registry: Registry): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const m of await registry.getMetricsAsJSON()) {
    const type = String(m.type);
    if (type === 'histogram') for (const s of ['_bucket', '_sum', '_count']) out.set(m.name + s, type);
    else if (type === 'summary') for (const s of ['', '_sum', '_count']) out.set(m.name + s, type);
    else out.set(m.name, type);
  }
  return out;
}
