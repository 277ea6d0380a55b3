#!/usr/bin/env node
// The `precise` command. Node runs the TypeScript sources itself by stripping their types (the
// imports name .ts files; tsconfig's erasableSyntaxOnly keeps every file strippable): as is
// from Node 22.18, behind --experimental-strip-types on 22.12 to 22.17.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const [major, minor] = process.versions.node.split('.').map(Number);
if (major < 22 || (major === 22 && minor < 12)) {
  console.error(`precise needs Node 22.12 or newer (this is ${process.versions.node}).`);
  process.exit(1);
}

// (the flag check too: should a Node ignore it, the import fails instead of a loop of restarts)
if (process.features.typescript || process.execArgv.includes('--experimental-strip-types')) {
  const { main } = await import('./main.ts');
  process.exitCode = await main(process.argv.slice(2));
} else {
  runWithTypeStripping();
}

/**
 * This command again in a Node that strips types. The child has a process group of its own, so
 * a Ctrl-C reaches it once, through this process (twice would cut its graceful stop short).
 */
function runWithTypeStripping() {
  const flags = ['--experimental-strip-types', '--no-warnings=ExperimentalWarning', ...process.execArgv];
  const child = spawn(process.execPath, [...flags, fileURLToPath(import.meta.url), ...process.argv.slice(2)], {
    stdio: 'inherit',
    detached: true,
  });
  const signals = ['SIGINT', 'SIGTERM', 'SIGHUP'];
  for (const signal of signals) process.on(signal, () => child.kill(signal));
  child.on('exit', (code, signal) => {
    if (!signal) process.exit(code ?? 1);
    for (const name of signals) process.removeAllListeners(name);
    process.kill(process.pid, signal);
  });
}
