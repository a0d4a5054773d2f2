export * from './kv';
export * from './errors';
export * from './config';
export * from './tokenizer';
export * from './rope';
export * from './cache';
export * from './session';
export * from './engine';
