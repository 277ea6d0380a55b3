import { fork, type ChildProcess, type ForkOptions } from 'node:child_process';

/**
 * A TypeScript file of the benchmarks in a child Node: as is where Node strips types by itself
 * (22.18 on), behind --experimental-strip-types before (22.12 to 22.17).
 */
export function forkTypeScript(file: URL, args: string[], options: Omit<ForkOptions, 'execArgv'>): ChildProcess {
  const execArgv = process.features.typescript ? [] : ['--experimental-strip-types', '--no-warnings=ExperimentalWarning'];
  return fork(file, args, { ...options, execArgv });
}
