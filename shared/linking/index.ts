export * from './types';
export * from './errors';
export * from './layout';
export * from './variants';
export * from './prefix';
export * from './pic';
export * from './cacheblend';
export * from './linker';
