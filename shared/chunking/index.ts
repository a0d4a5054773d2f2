export { type Chunk, ChunkingError } from './chunk';
export { KVSPLIT_DEFAULTS, type KVSplitOptions, type FixedSplitOptions, resolveKVSplitOptions } from './options';
export { splitDocument, splitDocuments } from './kvsplit';
export { splitFixed } from './fixed';
