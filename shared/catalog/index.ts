export * from './redis';
export * from './documents';
export * from './batches';
export * from './files';
export * from './tracking';
