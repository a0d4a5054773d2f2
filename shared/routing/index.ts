/** Cache-aware routing: the residency index, the scoring rule, the router, the queues, the adoption of dead workers' queues. */
export * from './modes';
export * from './keys';
export * from './score';
export { ResidencyPublisher, type RedisLike, type ResidencyOptions } from './residency';
export { ResidencyReader } from './reader';
export { InferenceQueues } from './queues';
export { Router, routingChunkKeys, type Route, type RouterOptions } from './router';
export { Adopter, type AdopterOptions, type Consumer } from './adopt';
export { QueueThief, Stealer, type StealerOptions, type ThiefOptions } from './steal';
