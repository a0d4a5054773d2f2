import { CatalogKeys } from '../../shared/catalog';
import { loadServiceConfig } from '../../shared/config';

describe('service configuration', () => {
  test('defaults: the catalog lives under epic:{api}, the queue under {epic}', () => {
    const cfg = loadServiceConfig({});
    expect(cfg.CATALOG_PREFIX).toBe('epic:{api}');
    expect(cfg.QUEUE_PREFIX).toBe('{epic}');
    expect(cfg.KV_REDIS_URL).toBe(cfg.REDIS_URL);
    expect(new CatalogKeys(cfg.CATALOG_PREFIX).batch('t', 'b')).toBe('epic:{api}:batch:t:b');
  });

  test('CATALOG_PREFIX must hold exactly one {hash tag}: the error names the variable', () => {
    expect(loadServiceConfig({ CATALOG_PREFIX: 'staging:{api}' }).CATALOG_PREFIX).toBe('staging:{api}');
    for (const bad of ['epic:api', '', 'a:{x}:{y}', 'a:{}', 'a:{x']) {
      expect(() => loadServiceConfig({ CATALOG_PREFIX: bad })).toThrow(/invalid configuration: CATALOG_PREFIX: must hold exactly one \{hash tag\}/);
    }
  });

  test('a number that is not one is refused by name', () => {
    expect(() => loadServiceConfig({ MAX_QUEUE_DEPTH: 'lots' })).toThrow(/MAX_QUEUE_DEPTH/);
  });
});
