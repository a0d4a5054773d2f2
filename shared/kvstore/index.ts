/** Tiered, content-addressed KV store (memory → disk → Redis). See store.ts. */
export * from './errors';
export * from './key';
export * from './format';
export * from './backend';
export { MemoryBackend, blockCharge } from './memory';
export type { MemoryTierOptions } from './memory';
export { DiskBackend } from './disk';
export type { DiskTierOptions } from './disk';
export { RedisBackend } from './redis';
export type { RedisClient, RedisTierOptions } from './redis';
export { tryAcquireLease, leaseHeld } from './lease';
export type { Lease } from './lease';
export { KVStore } from './store';
export type { ChunkResult, ChunkSource, CompileFn, KVStoreOptions, KVStoreStats, LeaseOptions } from './store';
