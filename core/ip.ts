import ipaddr from 'ipaddr.js';

/**
 * A client address, parsed by ipaddr.js: IPv4 only in its dotted four-part decimal form
 * (ipaddr.js would also read "127.1", hex and octal forms: "010.1.1.1" is 8.1.1.1), IPv6 in any
 * form, an IPv4-mapped IPv6 address (::ffff:a.b.c.d, as a dual-stack socket reports IPv4
 * clients) as its IPv4 address, and an IPv6 zone id (fe80::1%eth0, local to the host) dropped.
 * Anything else: null.
 */
export function parseIp(text: string): ipaddr.IPv4 | ipaddr.IPv6 | null {
  const trimmed = text.trim();
  if (ipaddr.IPv4.isValidFourPartDecimal(trimmed)) return ipaddr.IPv4.parse(trimmed);
  if (!ipaddr.IPv6.isValid(trimmed)) return null;
  const v6 = ipaddr.IPv6.parse(trimmed);
  return v6.isIPv4MappedAddress() ? v6.toIPv4Address() : new ipaddr.IPv6(v6.parts);
}

/** The first `count` groups of an IPv6 address, as hex without leading zeros ("2001:db8:0"). */
export function ipv6Groups(address: ipaddr.IPv6, count: number): string {
  return address.parts.slice(0, count).map((part) => part.toString(16)).join(':');
}
