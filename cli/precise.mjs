#!/usr/bin/env node
// The `precise` command. Node runs the TypeScript sources through tsx's loader.
import { register } from 'tsx/esm/api';

const [major, minor] = process.versions.node.split('.').map(Number);
if (major < 22 || (major === 22 && minor < 12)) {
  console.error(`precise needs Node 22.12 or newer (this is ${process.versions.node}).`);
  process.exit(1);
}

register();
const { main } = await import('./main.ts');
process.exitCode = await main(process.argv.slice(2));
