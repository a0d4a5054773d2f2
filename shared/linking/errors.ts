/** A link request that cannot be served as asked (bad mode, option or chunk). */
export class LinkInputError extends Error {
  override name = 'LinkInputError';
}
