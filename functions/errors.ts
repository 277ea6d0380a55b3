import { HTTPException } from 'hono/http-exception';
import { PreciseError } from '../core/errors.ts';

/** Any thrown value as the one error type; unknown errors become an opaque 500. */
export function toPreciseError(error: unknown): PreciseError {
  if (error instanceof PreciseError) return error;
  if (error instanceof HTTPException) {
    const code = error.status === 413 ? 'payload_too_large' : error.status === 401 ? 'unauthorized' : 'bad_request';
    return new PreciseError(code, error.message || 'bad request');
  }
  return new PreciseError('internal', 'internal error');
}
