import { randomBytes } from 'node:crypto';
import { mkdir, open, readFile } from 'node:fs/promises';
import path from 'node:path';
import type { NodeConfig } from './config.ts';

/**
 * The server secret on Node: PRECISE_SECRET, or else one generated on first use and kept in
 * the data dir (mode 0600), so that signed click URLs and webhook secrets survive restarts of a
 * local stack. The CLI reads the same, so the URLs it signs verify on the server.
 */
export async function loadServerSecret(config: Pick<NodeConfig, 'PRECISE_SECRET' | 'PRECISE_DATA_DIR'>): Promise<string> {
  if (config.PRECISE_SECRET) return config.PRECISE_SECRET;
  const file = path.resolve(config.PRECISE_DATA_DIR, 'server-secret');
  try {
    return (await readFile(file, 'utf8')).trim();
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
  await mkdir(path.dirname(file), { recursive: true });
  const secret = randomBytes(32).toString('base64url');
  try {
    const handle = await open(file, 'wx', 0o600);
    await handle.writeFile(secret);
    await handle.close();
    return secret;
  } catch (error) {
    // another process created it first: use theirs
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return (await readFile(file, 'utf8')).trim();
    throw error;
  }
}
