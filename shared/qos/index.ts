/** Quality of service between tenants: fair queuing on BullMQ priorities, per-tenant limits, bounded tenant labels. */
export * from './keys';
export * from './fair';
export * from './limits';
export * from './labels';
