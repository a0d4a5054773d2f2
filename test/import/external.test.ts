import { spawnSync } from 'node:child_process';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { Engine } from '../../shared/engine';
import { PYTHON, fixture } from '../helpers/fixtures';
import { copyModel, expectMatchesReference } from '../helpers/model';

/**
 * tools/model/external_data.py: a graph rewritten with its weights in one 64 KiB-aligned external file (what
 * bench/shapes/build.py and tools/model/import_hf.py write for large graphs, so onnxruntime maps the weights instead of
 * copying them) still computes the torch reference.
 */
test('a primitive and a stock graph with aligned external weights compute the reference', async () => {
  const m = copyModel(fixture('llama3-style'));
  try {
    for (const g of ['model_epic.onnx', 'model.onnx']) {
      const file = join(m.dir, g);
      const before = statSync(file).size;
      const r = spawnSync(PYTHON, [join(__dirname, '..', '..', 'tools', 'model', 'external_data.py'), file], { encoding: 'utf8' });
      expect(r.status).toBe(0);
      // the weights left the graph, and each sits at a 64 KiB-aligned offset of the data file
      expect(statSync(file).size).toBeLessThan(before / 4);
      const data = statSync(`${file}.data`).size;
      expect(data).toBeGreaterThan(before * 0.75);
      const offsets = [...readFileSync(file).toString('latin1').matchAll(/offset\x12[\x00-\x7f]([0-9]+)/g)].map((x) => Number(x[1]));
      expect(offsets.length).toBeGreaterThan(4);
      for (const o of offsets) expect(o % 65536).toBe(0);
    }
    for (const graph of ['primitive', 'stock'] as const) {
      const e = await Engine.load(m.dir, { graph });
      await expectMatchesReference(e, m.dir);
    }
  } finally {
    m.cleanup();
  }
});
