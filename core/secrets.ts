import { createHmac, timingSafeEqual } from 'node:crypto';

/**
 * Secrets derived from one server secret (PRECISE_SECRET): a click-signing secret per API key,
 * a webhook signing secret per integration, an alert signing secret per organization. Nothing
 * secret is stored in the database; a derived secret can be shown to its owner (the CLI prints
 * it) and recomputed to verify. Rotating the server secret rotates them all. node:crypto runs on
 * Node and in Workers (nodejs_compat).
 */
export function deriveSecret(serverSecret: string, purpose: 'click-signing' | 'webhook-signing' | 'alert-signing', id: string): string {
  return createHmac('sha256', serverSecret).update(`${purpose}:${id}`).digest('base64url');
}

export function hmacHex(secret: string, message: string): string {
  return createHmac('sha256', secret).update(message).digest('hex');
}

/** Constant-time comparison of two hex strings (false for different lengths or non-hex). */
export function hexEqual(a: string, b: string): boolean {
  if (!/^[0-9a-f]*$/i.test(a) || !/^[0-9a-f]*$/i.test(b) || a.length !== b.length || a.length % 2 !== 0) return false;
  return timingSafeEqual(Buffer.from(a, 'hex'), Buffer.from(b, 'hex'));
}
