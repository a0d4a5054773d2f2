import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { Cluster } from 'ioredis';
import { KVStore, chunkKey } from '../../shared/kvstore';
import { freePort, waitFor } from '../helpers/net';
import { MODEL, SHAPE, expectSameBlock, makeBlock, tempDir } from './helpers';

/**
 * The Redis tier on a real Redis Cluster (three masters started here on free ports): blobs spread over the slots, each
 * blob and its compile lease share a slot, and two stores on the cluster compile a shared chunk once.
 */
const haveRedis = spawnSync('sh', ['-c', 'command -v redis-server && command -v redis-cli'], { stdio: 'ignore' }).status === 0;
const it = haveRedis ? test : test.skip;

describe('Redis tier on a Redis Cluster', () => {
  const nodes: ChildProcess[] = [];
  let ports: number[] = [];
  const tmp = tempDir('cluster');
  let cluster: Cluster | undefined;
  afterAll(async () => {
    await cluster?.quit().catch(() => undefined);
    for (const n of nodes) n.kill('SIGTERM');
    await Promise.all(nodes.map((n) => new Promise((r) => (n.exitCode !== null ? r(0) : n.once('exit', r)))));
    tmp.cleanup();
  });

  it('stores, reads, spreads and single-flights chunks across the cluster', async () => {
    ports = [await freePort(), await freePort(), await freePort()];
    for (const p of ports) {
      nodes.push(
        spawn('redis-server', ['--port', String(p), '--bind', '127.0.0.1', '--cluster-enabled', 'yes', '--cluster-config-file', `${tmp.dir}/nodes-${p}.conf`, '--save', '', '--appendonly', 'no', '--dir', tmp.dir], { stdio: 'ignore' }),
      );
    }
    await waitFor(async () => (ports.every((p) => spawnSync('redis-cli', ['-p', String(p), 'ping']).stdout?.toString().includes('PONG')) ? true : undefined), 10_000, 'cluster nodes');
    const create = spawnSync('redis-cli', ['--cluster', 'create', ...ports.map((p) => `127.0.0.1:${p}`), '--cluster-replicas', '0', '--cluster-yes'], { encoding: 'utf8' });
    expect(create.status).toBe(0);
    await waitFor(async () => (spawnSync('redis-cli', ['-p', String(ports[0]), 'cluster', 'info']).stdout.toString().includes('cluster_state:ok') ? true : undefined), 15_000, 'cluster ok');
    cluster = new Cluster(ports.map((port) => ({ host: '127.0.0.1', port })), { redisOptions: { maxRetriesPerRequest: 2 } });
    const open = () => KVStore.open({ modelId: MODEL, shape: SHAPE, memory: false, disk: false, redis: { client: cluster!, prefix: 'epic:kv' }, lease: { ttlMs: 5000, waitTimeoutMs: 10_000 } });
    const a = await open();
    const b = await open();
    // Many chunks: stored, read back from the other store, spread over every master.
    const keys: string[] = [];
    for (let i = 0; i < 30; i++) {
      const block = makeBlock(i, 16);
      const key = chunkKey({ modelId: MODEL, tokens: block.tokens });
      keys.push(key);
      await a.put(key, block);
      expectSameBlock((await b.get(key))!, block);
    }
    const perNode = ports.map((p) => Number(spawnSync('redis-cli', ['-p', String(p), 'dbsize']).stdout.toString().trim()));
    expect(perNode.every((n) => n > 0)).toBe(true);
    // Single flight across the two stores: one compile.
    let compiles = 0;
    const key = chunkKey({ modelId: MODEL, tokens: [1, 2, 3] });
    const compile = async () => {
      compiles++;
      await new Promise((r) => setTimeout(r, 300));
      return makeBlock(99, 8);
    };
    const [x, y] = await Promise.all([a.getOrCompute(key, compile), b.getOrCompute(key, compile)]);
    expect(compiles).toBe(1);
    expectSameBlock(x, y);
    await a.close();
    await b.close();
  }, 60_000);
});
