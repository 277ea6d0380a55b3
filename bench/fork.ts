import { fork, type ChildProcess, type ForkOptions } from 'node:child_process';

/**
 * A TypeScript file of the benchmarks in a child Node, with the flags of the bench:* scripts:
 * Node strips types by itself from 22.18; on 22.12 to 22.17 only with the flag, which a child
 * does not inherit once execArgv is given.
 */
export function forkTypeScript(file: URL, args: string[], options: Omit<ForkOptions, 'execArgv'>): ChildProcess {
  return fork(file, args, { ...options, execArgv: ['--experimental-strip-types', '--no-warnings=ExperimentalWarning'] });
}
