import type { ModelConfig } from '../config';
import { kvShape } from '../config';
import { ModelLoadError } from '../errors';
import { openGraph, type SessionOptions } from '../session';
import { PrimitiveRunner } from './primitive';
import { StockRunner } from './stock';
import type { GraphRunner } from './types';

export * from './types';
export { NEG_INF, buildBias } from './bias';
export { PrimitiveRunner } from './primitive';
export { StockRunner } from './stock';

/** Which graph runs the primitive: the model's primitive graph when it has one (`auto`), or the one named. */
export type GraphChoice = 'auto' | 'primitive' | 'stock';

/** Open the graph the choice names and wrap it in its runner. */
export async function openRunner(config: ModelConfig, want: GraphChoice, opts: SessionOptions = {}): Promise<GraphRunner> {
  if (want === 'stock' || (want === 'auto' && !config.graphs.primitive)) {
    return new StockRunner(await openGraph(config, 'stock', config.graphs.stock ?? 'model.onnx', opts), kvShape(config), config.vocabSize);
  }
  if (!config.graphs.primitive) {
    throw new ModelLoadError(`${config.dir}/config.json names no primitive graph (epic.graphs.primitive)`, `${config.dir}/config.json`);
  }
  return new PrimitiveRunner(await openGraph(config, 'primitive', config.graphs.primitive, opts), kvShape(config));
}
