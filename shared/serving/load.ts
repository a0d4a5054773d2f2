import type { ServiceConfig } from '../config';
import { Engine, type EngineOptions } from '../engine/engine';

/** Engine.load's options as the services configure them (the graph file, the execution provider, onnxruntime's threads). */
export function engineOptions(cfg: ServiceConfig): EngineOptions {
  return { graphFile: cfg.MODEL_FILE, executionProvider: cfg.EXECUTION_PROVIDER, intraOpThreads: cfg.ORT_THREADS, spinning: cfg.ORT_SPINNING, flushDenormals: cfg.ORT_FLUSH_DENORMALS };
}

/** The services' engine: MODEL_DIR loaded with engineOptions (the inference and precompute workers load the same). */
export function loadServiceEngine(cfg: ServiceConfig): Promise<Engine> {
  return Engine.load(cfg.MODEL_DIR, engineOptions(cfg));
}
