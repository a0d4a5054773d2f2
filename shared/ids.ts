/**
 * The one id rule of the project: 1-128 letters, digits, `_` or `-`. Document, job, batch and file ids (the catalog's
 * Redis keys and the API's paths), KV store keys (filenames on the disk tier), and the CLI's document ids all follow it.
 */
export const ID_PATTERN = /^[A-Za-z0-9_-]{1,128}$/;
/** The longest id. */
export const MAX_ID_LENGTH = 128;
/** The rule in words, for error messages. */
export const ID_RULE = 'ids are 1-128 letters, digits, _ or -';
