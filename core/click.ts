import { PreciseError } from './errors.ts';
import { hexEqual, hmacHex } from './secrets.ts';

/**
 * Click redirects without an open redirect: a destination is followed only when its URL is
 * signed with the key's click-signing secret, or when its host is on the campaign's allow-list
 * (campaigns.properties.click_allow_list: ["shop.example.com", ".example.org"], a leading dot
 * allowing subdomains). Only absolute http(s) URLs without credentials or control characters.
 */
export const MAX_DESTINATION_LENGTH = 2048;

export function parseDestination(raw: string | undefined): URL {
  if (!raw) throw new PreciseError('validation_failed', 'url is required: the destination of the click', { field: 'url' });
  if (raw.length > MAX_DESTINATION_LENGTH) {
    throw new PreciseError('validation_failed', `url is longer than ${MAX_DESTINATION_LENGTH} characters`, { field: 'url' });
  }
  // CR, LF and other controls (raw, or still percent-encoded) would split headers or hide a target.
  if (/[\u0000-\u001f\u007f]/.test(raw) || /%0[0-9a-f]|%1[0-9a-f]|%7f/i.test(raw)) {
    throw new PreciseError('validation_failed', 'url contains control characters', { field: 'url' });
  }
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new PreciseError('validation_failed', 'url must be an absolute http(s) URL', { field: 'url' });
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    throw new PreciseError('validation_failed', `url scheme ${url.protocol} is not allowed (http or https only)`, { field: 'url' });
  }
  if (url.username || url.password) {
    throw new PreciseError('validation_failed', 'url must not carry credentials', { field: 'url' });
  }
  return url;
}

/** What a click signature covers: the destination as given, and the campaign and creative. */
export function clickSigningInput(url: string, campaignId?: string | null, creativeId?: string | null): string {
  return `${url}\n${campaignId ?? ''}\n${creativeId ?? ''}`;
}

export function signClick(secret: string, url: string, campaignId?: string | null, creativeId?: string | null): string {
  return hmacHex(secret, clickSigningInput(url, campaignId, creativeId));
}

export function clickSignatureValid(
  secret: string,
  signature: string,
  url: string,
  campaignId?: string | null,
  creativeId?: string | null,
): boolean {
  return hexEqual(signature, signClick(secret, url, campaignId, creativeId));
}

/** Whether a host is on an allow-list: exact names, or ".example.com" for the domain and its subdomains. */
export function hostAllowed(host: string, allowList: unknown): boolean {
  if (!Array.isArray(allowList)) return false;
  const name = host.toLowerCase().replace(/\.$/, '');
  return allowList.some((entry) => {
    if (typeof entry !== 'string' || entry.length === 0) return false;
    const allowed = entry.toLowerCase().replace(/\.$/, '');
    if (allowed.startsWith('.')) return name === allowed.slice(1) || name.endsWith(allowed);
    return name === allowed;
  });
}

/** The destination with the click id: `{click_id}` substituted where the URL asks, else `pclid=` appended. */
export function withClickId(url: URL, clickId: string): string {
  const text = url.toString();
  const macro = /\{click_id\}|%7Bclick_id%7D/gi;
  if (macro.test(text)) return text.replace(macro, encodeURIComponent(clickId));
  const next = new URL(text);
  next.searchParams.append('pclid', clickId);
  return next.toString();
}
