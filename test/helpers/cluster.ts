import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Cluster } from 'ioredis';
import { freePort, waitFor } from './net';

/** Whether redis-server and redis-cli are on PATH (a cluster can be started). */
export const haveRedisCluster = spawnSync('sh', ['-c', 'command -v redis-server && command -v redis-cli'], { stdio: 'ignore' }).status === 0;

/**
 * A real Redis Cluster of three masters on free ports (as test/kvstore/cluster.test.ts starts one): created with
 * redis-cli --cluster create, ready once cluster_state is ok. stop() ends the nodes started here and removes their folder.
 */
export async function startRedisCluster(): Promise<{ ports: number[]; client: (o?: object) => Cluster; stop: () => Promise<void> }> {
  const dir = mkdtempSync(join(tmpdir(), 'epic-cluster-'));
  const nodes: ChildProcess[] = [];
  const clients: Cluster[] = [];
  const ports = [await freePort(), await freePort(), await freePort()];
  const stop = async () => {
    await Promise.all(clients.map((c) => c.quit().catch(() => undefined)));
    for (const n of nodes) n.kill('SIGTERM');
    await Promise.all(nodes.map((n) => new Promise((r) => (n.exitCode !== null || n.signalCode !== null ? r(0) : n.once('exit', r)))));
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    for (const p of ports) {
      nodes.push(
        spawn('redis-server', ['--port', String(p), '--bind', '127.0.0.1', '--cluster-enabled', 'yes', '--cluster-config-file', `${dir}/nodes-${p}.conf`, '--save', '', '--appendonly', 'no', '--dir', dir], { stdio: 'ignore' }),
      );
    }
    await waitFor(async () => (ports.every((p) => spawnSync('redis-cli', ['-p', String(p), 'ping']).stdout?.toString().includes('PONG')) ? true : undefined), 10_000, 'cluster nodes');
    const create = spawnSync('redis-cli', ['--cluster', 'create', ...ports.map((p) => `127.0.0.1:${p}`), '--cluster-replicas', '0', '--cluster-yes'], { encoding: 'utf8' });
    if (create.status !== 0) throw new Error(`redis-cli --cluster create failed: ${create.stderr || create.stdout}`);
    await waitFor(async () => (spawnSync('redis-cli', ['-p', String(ports[0]), 'cluster', 'info']).stdout.toString().includes('cluster_state:ok') ? true : undefined), 15_000, 'cluster ok');
  } catch (e) {
    await stop();
    throw e;
  }
  const client = (o: object = {}) => {
    const c = new Cluster(ports.map((port) => ({ host: '127.0.0.1', port })), { redisOptions: { maxRetriesPerRequest: null }, ...o });
    clients.push(c);
    return c;
  };
  return { ports, client, stop };
}
