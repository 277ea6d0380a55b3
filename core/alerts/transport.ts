import { lookup as dnsLookup, type LookupAddress } from 'node:dns';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { LookupFunction } from 'node:net';
import { isAllowedAddress, type AlertTargetOptions } from './settings.ts';

/**
 * One POST of an alert to a customer's endpoint, hardened for a URL someone else chose: the
 * host's addresses are checked where the connection is made (the socket's own lookup, so a DNS
 * answer cannot change between the check and the connect), redirects are not followed (a 3xx is
 * an answer like any other), the whole exchange has a deadline, and at most 1 KiB of the answer
 * is read. Resolves with the status, rejects when no answer came (refused address, DNS, connect,
 * TLS, deadline).
 */
export interface WebhookAnswer {
  status: number;
  /** the start of the body, for the delivery log */
  body: string;
}

export interface PostOptions extends AlertTargetOptions {
  timeoutMs: number;
}

const MAX_BODY = 1024;

export function postWebhook(url: URL, headers: Record<string, string>, body: string, options: PostOptions): Promise<WebhookAnswer> {
  return new Promise((resolve, reject) => {
    const send = url.protocol === 'https:' ? httpsRequest : httpRequest;
    const request = send(url, {
      method: 'POST',
      headers: { ...headers, 'content-length': String(Buffer.byteLength(body)) },
      lookup: vettedLookup(options),
      // a connection of its own each time: nothing pooled outlives the check of its address
      agent: false,
    });
    const deadline = setTimeout(() => request.destroy(new Error(`no answer within ${options.timeoutMs / 1000} s`)), options.timeoutMs);
    request.on('error', (error) => {
      clearTimeout(deadline);
      reject(error);
    });
    request.on('response', (response: IncomingMessage) => {
      const chunks: Buffer[] = [];
      let length = 0;
      const done = () => {
        clearTimeout(deadline);
        response.destroy();
        resolve({ status: response.statusCode ?? 0, body: Buffer.concat(chunks).subarray(0, MAX_BODY).toString('utf8') });
      };
      response.on('data', (chunk: Buffer) => {
        chunks.push(chunk);
        length += chunk.length;
        if (length >= MAX_BODY) done();
      });
      response.on('end', done);
      response.on('error', done);
    });
    request.end(body);
  });
}

/** dns.lookup, refusing a host any of whose addresses is not allowed (a mixed answer is a trick). */
function vettedLookup(options: AlertTargetOptions): LookupFunction {
  return (hostname, lookupOptions, callback) => {
    dnsLookup(hostname, { ...lookupOptions, all: true }, (error, addresses: LookupAddress[]) => {
      if (error) return callback(error, '');
      const refused = addresses.find((address) => !isAllowedAddress(address.address, options));
      if (refused || addresses.length === 0) {
        const reason = refused ? `${hostname} resolves to ${refused.address}, not a public address` : `${hostname} has no address`;
        return callback(Object.assign(new Error(reason), { code: 'EADDRNOTPUBLIC' }), '');
      }
      if (lookupOptions.all) return callback(null, addresses);
      callback(null, addresses[0]!.address, addresses[0]!.family);
    });
  };
}
