import { accessSync, constants, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium, type Browser } from 'playwright-core';

/**
 * The Chromium the browser tests drive: a system one when there is one (CHROMIUM_PATH, else
 * chromium, chromium-browser or google-chrome on the PATH), otherwise the one this project brings
 * as an npm package (@sparticuz/chromium, unpacked into the temp dir on first use). Never a
 * download: `npm ci` alone is enough for `npm test`.
 */
export interface ChromiumChoice {
  source: 'system' | 'bundled';
  executablePath: string;
  args: string[];
  env?: Record<string, string>;
}

const SYSTEM_NAMES = ['chromium', 'chromium-browser', 'google-chrome', 'google-chrome-stable'];
const SYSTEM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

function isExecutableFile(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return statSync(path).isFile();
  } catch {
    return false;
  }
}

/** The first Chromium on the PATH (and in /usr/bin, which a test runner's PATH may lack). */
export function findSystemChromium(): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(delimiter).filter(Boolean), '/usr/bin'];
  for (const name of SYSTEM_NAMES) {
    for (const dir of dirs) {
      if (isExecutableFile(join(dir, name))) return join(dir, name);
    }
  }
  return undefined;
}

export async function chooseChromium(): Promise<ChromiumChoice> {
  const explicit = process.env.CHROMIUM_PATH;
  if (explicit) {
    if (!isExecutableFile(explicit)) throw new Error(`CHROMIUM_PATH=${explicit} is not an executable file`);
    return { source: 'system', executablePath: explicit, args: SYSTEM_ARGS };
  }
  const system = findSystemChromium();
  if (system) return { source: 'system', executablePath: system, args: SYSTEM_ARGS };
  return bundledChromium();
}

/**
 * @sparticuz/chromium is a headless shell built for Amazon Linux; its binary links NSS, NSPR and
 * expat from the system. A bare Debian (node:22-slim) has none of them, so the package's own
 * copies (al2023.tar.br, which it unpacks itself only on Lambda) go first on the library path,
 * and its fonts.conf replaces the system's (which such a machine lacks too).
 */
async function bundledChromium(): Promise<ChromiumChoice> {
  const { default: sparticuz, inflate } = await import('@sparticuz/chromium');
  const executablePath = await sparticuz.executablePath();
  const bin = fileURLToPath(new URL('../../node_modules/@sparticuz/chromium/bin', import.meta.url));
  const libDir = join(await inflate(join(bin, 'al2023.tar.br')), 'lib');
  const libraryPath = [libDir, process.env.LD_LIBRARY_PATH].filter(Boolean).join(delimiter);
  return {
    source: 'bundled',
    executablePath,
    args: sparticuz.args,
    env: { ...stringEnv(), LD_LIBRARY_PATH: libraryPath, FONTCONFIG_PATH: join(tmpdir(), 'fonts') },
  };
}

function stringEnv(): Record<string, string> {
  return Object.fromEntries(Object.entries(process.env).filter((entry): entry is [string, string] => entry[1] !== undefined));
}

export async function launchChromium(): Promise<{ browser: Browser; choice: ChromiumChoice }> {
  const choice = await chooseChromium();
  const browser = await chromium.launch({ executablePath: choice.executablePath, args: choice.args, env: choice.env });
  return { browser, choice };
}
