import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startHttpServer, type HttpServer } from '../../functions/node.ts';
import { BACKEND } from '../helpers/database.ts';
import { createIngestHarness, type IngestHarness } from '../helpers/ingest.ts';

// Node's own defences, through a real server on a real socket: slow and idle clients are cut
// off after the configured timeouts, and connections beyond the cap are closed on accept.

interface Probe {
  socket: net.Socket;
  received: () => string;
  /** ms from connect to close */
  closed: Promise<number>;
}

function connect(url: string): Promise<Probe> {
  const { port, hostname } = new URL(url);
  return new Promise((resolve, reject) => {
    const started = performance.now();
    let data = '';
    const socket = net.connect(Number(port), hostname, () => resolve({ socket, received: () => data, closed }));
    const closed = new Promise<number>((done) => socket.once('close', () => done(performance.now() - started)));
    socket.on('data', (chunk) => (data += chunk.toString()));
    socket.once('error', reject);
  });
}

const within = <T>(promise: Promise<T>, ms: number) =>
  Promise.race([promise, new Promise<'still open'>((resolve) => setTimeout(() => resolve('still open'), ms))]);

describe(`Node server limits (${BACKEND})`, () => {
  let h: IngestHarness;
  let server: HttpServer;
  beforeAll(async () => {
    h = await createIngestHarness();
    server = await startHttpServer({
      services: h.services,
      port: 0,
      host: '127.0.0.1',
      limits: { HTTP_HEADERS_TIMEOUT_MS: 600, HTTP_REQUEST_TIMEOUT_MS: 1500, HTTP_KEEP_ALIVE_TIMEOUT_MS: 400, HTTP_MAX_CONNECTIONS: 50 },
    });
  });
  afterAll(async () => {
    await server?.close();
    await h?.close();
  });

  it('closes a slowloris socket that trickles headers, after the header timeout', async () => {
    const probe = await connect(server.url);
    probe.socket.write('GET /healthz HTTP/1.1\r\nHost: precise\r\n');
    const trickle = setInterval(() => !probe.socket.destroyed && probe.socket.write('X-Slow: 1\r\n'), 100);
    try {
      const closedAfter = await within(probe.closed, 5000);
      expect(closedAfter).not.toBe('still open');
      expect(closedAfter as number).toBeGreaterThanOrEqual(550);
      expect(closedAfter as number).toBeLessThan(2500);
      expect(probe.received()).toMatch(/^HTTP\/1\.1 408/);
    } finally {
      clearInterval(trickle);
    }
  });

  it('closes a socket that never sends a byte', async () => {
    const probe = await connect(server.url);
    expect(await within(probe.closed, 5000)).not.toBe('still open');
  });

  it('closes a request whose body never finishes, after the request timeout', async () => {
    const probe = await connect(server.url);
    probe.socket.write(`POST /v1/px?key=${h.publishableKey} HTTP/1.1\r\nHost: precise\r\nContent-Type: text/plain\r\nContent-Length: 1000\r\n\r\n{"`);
    const trickle = setInterval(() => !probe.socket.destroyed && probe.socket.write(' '), 100);
    try {
      const closedAfter = await within(probe.closed, 6000);
      expect(closedAfter).not.toBe('still open');
      expect(closedAfter as number).toBeGreaterThanOrEqual(1400);
    } finally {
      clearInterval(trickle);
    }
  });

  it('closes an idle keep-alive connection after the keep-alive timeout, not before', async () => {
    const probe = await connect(server.url);
    probe.socket.write('GET /healthz HTTP/1.1\r\nHost: precise\r\n\r\n');
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(probe.received()).toMatch(/^HTTP\/1\.1 200/);
    expect(probe.socket.destroyed).toBe(false);
    expect(await within(probe.closed, 3000)).not.toBe('still open');
  });
});

describe(`Node server connection cap (${BACKEND})`, () => {
  let h: IngestHarness;
  let server: HttpServer;
  beforeAll(async () => {
    h = await createIngestHarness();
    server = await startHttpServer({ services: h.services, port: 0, host: '127.0.0.1', limits: { HTTP_MAX_CONNECTIONS: 5 } });
  });
  afterAll(async () => {
    await server?.close();
    await h?.close();
  });

  it('closes connections beyond the cap on accept, and takes new ones once others are gone', async () => {
    const held = await Promise.all(Array.from({ length: 5 }, () => connect(server.url)));
    await new Promise((resolve) => setTimeout(resolve, 100)); // the server has accepted them
    const extra = await connect(server.url);
    extra.socket.write('GET /healthz HTTP/1.1\r\nHost: precise\r\n\r\n');
    expect(await within(extra.closed, 2000)).not.toBe('still open');
    expect(extra.received()).toBe('');
    // the held ones are still served
    held[0]!.socket.write('GET /healthz HTTP/1.1\r\nHost: precise\r\n\r\n');
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(held[0]!.received()).toMatch(/^HTTP\/1\.1 200/);

    for (const probe of held) probe.socket.destroy();
    await Promise.all(held.map((probe) => probe.closed));
    await new Promise((resolve) => setTimeout(resolve, 100));
    const response = await fetch(`${server.url}/healthz`);
    expect(response.status).toBe(200);
    expect(response.headers.get('x-content-type-options')).toBe('nosniff');
  });
});
