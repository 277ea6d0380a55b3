import { createHash, timingSafeEqual } from 'node:crypto';

/**
 * API keys. A key is `<prefix>_<32 base62 chars>` (190 random bits), shown once; only its
 * SHA-256 is stored. node:crypto's synchronous hash runs on Node and in Workers (nodejs_compat)
 * and costs about a microsecond, where crypto.subtle's promise costs tens on the pixel path.
 */
export type KeyKind = 'publishable' | 'secret' | 'postback';
export type KeyScope = 'ingest' | 'read' | 'admin';

export const KEY_PREFIX: Record<KeyKind, string> = { publishable: 'pk', secret: 'sk', postback: 'pb' };
export const KEY_SCOPES: readonly KeyScope[] = ['ingest', 'read', 'admin'];

const ALPHABET = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
const KEY_BODY_LENGTH = 32;

export function generateKey(kind: KeyKind): string {
  // Rejection sampling keeps every character uniform (256 is not a multiple of 62).
  const body: string[] = [];
  while (body.length < KEY_BODY_LENGTH) {
    for (const byte of crypto.getRandomValues(new Uint8Array(48))) {
      if (byte < 248 && body.length < KEY_BODY_LENGTH) body.push(ALPHABET[byte % 62]!);
    }
  }
  return `${KEY_PREFIX[kind]}_${body.join('')}`;
}

export function hashKey(key: string): string {
  return createHash('sha256').update(key, 'utf8').digest('hex');
}

/** What people see to tell keys apart: the kind prefix and the first 5 characters. */
export function displayPrefix(key: string): string {
  return key.slice(0, key.indexOf('_') + 6);
}

/** The kind a key claims by its prefix, or null when it is not a Precise key at all. */
export function kindOfKey(key: string): KeyKind | null {
  const match = /^(pk|sk|pb)_[0-9A-Za-z]{32}$/.exec(key);
  if (!match) return null;
  return (Object.entries(KEY_PREFIX).find(([, prefix]) => prefix === match[1])?.[0] as KeyKind) ?? null;
}

/**
 * Constant-time equality of two digests (node:crypto's timingSafeEqual, which throws on inputs
 * of different lengths: those return false first, and a digest's length is no secret).
 */
export function digestsEqual(a: string, b: string): boolean {
  const [left, right] = [Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8')];
  return left.length === right.length && timingSafeEqual(left, right);
}
