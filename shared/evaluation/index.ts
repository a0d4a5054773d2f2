export * from './qa';
