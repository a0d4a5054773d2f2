/**
 * API keys and tenants with real processes (API, worker, precompute) and a private redis-server: a tenant sees only
 * its own documents, jobs, files, batches and results (another's are 404); cached chunks are salted per tenant unless
 * sharing is switched on; prompts, document text and keys never reach the logs; no key reaches /metrics.
 */
import type IORedis from 'ioredis';
import { CatalogKeys, DocumentStore } from '../../shared/catalog';
import { waitFor } from '../helpers/net';
import { httpJson, ProcStack, RedisServer, scrape } from './procs';

const ALICE = 'sk-alice-5e1f0c9b2d7a4e63';
const BOB = 'sk-bob-a8c3d1e9f04b7265';
// Distinctive strings that must never appear in any log line.
const SECRET_DOC = 'Zephyrine Quillback guards the vault code 7731 at Marrowgate .';
const SECRET_PROMPT = 'Q : which vault does Zephyrine Quillback guard ? A :';

describe('tenants', () => {
  let redis: RedisServer;
  let s: ProcStack | undefined;
  let shared: ProcStack | undefined;
  let client: IORedis;
  beforeAll(async () => {
    redis = await RedisServer.start();
    client = redis.client();
  });
  afterAll(async () => {
    await shared?.close();
    await s?.close();
    client?.disconnect();
    await redis?.stop();
  });

  test('isolation of objects and cache entries; nothing secret in logs or metrics', async () => {
    // Log level as deployed by default (info).
    s = await ProcStack.start({ redis, services: [], env: { API_KEYS: `${ALICE}:alice,${BOB}:bob`, LOG_LEVEL: 'info' } });
    await Promise.all([s.add('api'), s.add('worker'), s.add('precompute')]);
    const as = (key: string) => ({ authorization: `Bearer ${key}` });
    const A = (method: string, path: string, body?: unknown) => httpJson(s!.base, method, path, body, as(ALICE));
    const B = (method: string, path: string, body?: unknown) => httpJson(s!.base, method, path, body, as(BOB));

    // Alice's objects.
    const doc = await A('POST', '/v1/documents', { text: SECRET_DOC, id: 'vault' });
    expect(doc.status).toBe(201);
    const job = await A('POST', '/v1/jobs', { requests: [{ documents: ['vault'], question: SECRET_PROMPT, max_tokens: 4 }] });
    expect(job.status).toBe(202);
    const cmpl = await A('POST', '/v1/completions', { documents: ['vault'], prompt: SECRET_PROMPT, max_tokens: 4 });
    expect(cmpl.status).toBe(200);
    const form = new FormData();
    form.append('purpose', 'batch');
    const line = { custom_id: 'q1', method: 'POST', url: '/v1/completions', body: { prompt: SECRET_PROMPT, documents: ['vault'], max_tokens: 3 } };
    form.append('file', new Blob([JSON.stringify(line) + '\n']), 'batch.jsonl');
    const file = (await (await fetch(`${s.base}/v1/files`, { method: 'POST', headers: as(ALICE), body: form })).json()) as any;
    expect(file.object).toBe('file');
    const batch = await A('POST', '/v1/batches', { input_file_id: file.id, endpoint: '/v1/completions', completion_window: '24h' });
    expect(batch.status).toBe(200);
    const batchDone = await waitFor(async () => {
      const r = await A('GET', `/v1/batches/${batch.body.id}`);
      return r.body.status === 'completed' ? r.body : undefined;
    }, 30_000, 'the batch');
    await waitFor(async () => ((await A('GET', `/v1/jobs/${job.body.id}`)).body.status === 'completed' ? true : undefined), 30_000, 'the job');

    // Bob sees none of it: every id of Alice's is 404 to him, every list is empty of it.
    const notFound: [string, string, unknown?][] = [
      ['GET', '/v1/documents/vault'],
      ['DELETE', '/v1/documents/vault'],
      ['POST', '/v1/completions', { documents: ['vault'], prompt: 'x', max_tokens: 1 }],
      ['POST', '/v1/jobs', { requests: [{ documents: ['vault'], question: 'x' }] }],
      ['GET', `/v1/jobs/${job.body.id}`],
      ['GET', `/v1/jobs/${job.body.id}?results=true`],
      ['GET', `/v1/jobs/${job.body.id}/events`],
      ['POST', `/v1/jobs/${job.body.id}/cancel`],
      ['GET', `/v1/files/${file.id}`],
      ['GET', `/v1/files/${file.id}/content`],
      ['DELETE', `/v1/files/${file.id}`],
      ['GET', `/v1/files/${batchDone.output_file_id}/content`],
      ['POST', '/v1/batches', { input_file_id: file.id, endpoint: '/v1/completions', completion_window: '24h' }],
      ['GET', `/v1/batches/${batch.body.id}`],
      ['POST', `/v1/batches/${batch.body.id}/cancel`],
      ['GET', '/admin/queues'],
    ];
    for (const [method, path, body] of notFound) {
      const r = await B(method, path, body);
      expect({ method, path, status: r.status, leaked: r.text.includes('Zephyrine') }).toEqual({ method, path, status: 404, leaked: false });
    }
    expect((await B('GET', '/v1/documents')).body.data).toEqual([]);
    expect((await B('GET', '/v1/files')).body.data).toEqual([]);
    expect((await B('GET', '/v1/batches')).body.data).toEqual([]);
    // The same id in Bob's space is Bob's own document; Alice's is untouched.
    expect((await B('POST', '/v1/documents', { text: 'Bob owns this one .', id: 'vault' })).status).toBe(201);
    expect((await A('GET', '/v1/documents/vault')).body.chars).toBe(SECRET_DOC.length);
    // No key, a wrong key, another scheme: 401. The queue dashboard (every tenant's jobs) is for the admin tenant only.
    for (const h of [{}, { authorization: 'Bearer sk-nope' }, { authorization: `Basic ${ALICE}` }] as Record<string, string>[]) expect((await httpJson(s.base, 'GET', '/v1/documents', undefined, h)).status).toBe(401);
    expect((await A('GET', '/admin/queues')).status).toBe(404);

    // Cache isolation: the same text gives Bob other chunk keys than Alice, so neither can hit (or time) the other's.
    expect((await B('POST', '/v1/documents', { text: SECRET_DOC, id: 'same-text' })).status).toBe(201);
    const docs = new DocumentStore(client, new CatalogKeys(s!.env.CATALOG_PREFIX));
    const keysOf = async (tenant: string, id: string) => (await docs.get(tenant, id))!.chunks.map((c) => c.key);
    const [ka, kb] = [await keysOf('alice', 'vault'), await keysOf('bob', 'same-text')];
    expect(ka.length).toBe(kb.length);
    expect(ka.filter((k) => kb.includes(k))).toEqual([]);
    const kvKeys = async () => (await client.keys(`${s!.env.KV_REDIS_PREFIX}:*`)).filter((k) => !k.endsWith(':lock'));
    await waitFor(async () => ((await kvKeys()).filter((k) => kb.some((b) => k.includes(b))).length === kb.length ? true : undefined), 30_000, "Bob's chunks precomputed");
    for (const k of [...ka, ...kb]) expect((await kvKeys()).some((x) => x.includes(k))).toBe(true);

    // Sharing is an explicit deployment option: with it, the same text is the same cache entry for every tenant.
    shared = await ProcStack.start({ redis, services: ['api'], env: { API_KEYS: `${ALICE}:alice,${BOB}:bob`, KV_SHARE_ACROSS_TENANTS: 'true', QUEUE_PREFIX: '{epic-shared}' } });
    const SA = await httpJson(shared.base, 'POST', '/v1/documents', { text: SECRET_DOC, id: 'shared-a' }, as(ALICE));
    const SB = await httpJson(shared.base, 'POST', '/v1/documents', { text: SECRET_DOC, id: 'shared-b' }, as(BOB));
    expect([SA.status, SB.status]).toEqual([201, 201]);
    expect(await keysOf('alice', 'shared-a')).toEqual(await keysOf('bob', 'shared-b'));

    // Nothing secret in what the services printed, nor in any /metrics.
    const metrics = (await Promise.all([scrape(s.of('api')[0].port), scrape(s.of('worker')[0].port), scrape(s.of('precompute')[0].port)])).join('\n');
    expect(metrics).toContain('epic_'); // scraped for real
    const logs = s.output() + shared.output();
    expect(logs).toContain('"msg":"api listening"'); // captured for real
    for (const secret of [ALICE, BOB, 'Zephyrine', 'Quillback', 'Marrowgate']) {
      expect({ secret, inLogs: logs.includes(secret), inMetrics: metrics.includes(secret) }).toEqual({ secret, inLogs: false, inMetrics: false });
    }
  }, 150_000);
});
