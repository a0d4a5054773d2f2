/** Request limits the API enforces before anything is enqueued. */
export const MAX_TOKENS_CAP = 4096;
export const MAX_BATCH_REQUESTS = 10_000;
