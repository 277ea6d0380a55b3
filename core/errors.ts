/**
 * The one error type of Precise. A code says what went wrong (stable, for machines), the
 * message says it for people, `field` names the offending input. Every HTTP error body is
 * `{ "error": { "code", "message", "details", "request_id" } }` built from one of these.
 */
export const ERROR_STATUS = {
  bad_request: 400,
  invalid_argument: 400,
  validation_failed: 400,
  unauthorized: 401,
  forbidden: 403,
  not_found: 404,
  conflict: 409,
  payload_too_large: 413,
  rate_limited: 429,
  internal: 500,
  unavailable: 503,
  // operator-side errors (CLI, migrator); never sent over HTTP
  migration_bad_name: 500,
  migration_changed: 500,
  migration_pre_baseline: 500,
  migration_unknown: 500,
  config_invalid: 500,
} as const;

export type ErrorCode = keyof typeof ERROR_STATUS;

export interface ErrorDetails {
  field?: string;
  [key: string]: unknown;
}

export class PreciseError extends Error {
  readonly code: ErrorCode;
  readonly details: ErrorDetails;

  constructor(code: ErrorCode, message: string, details: ErrorDetails = {}) {
    super(message);
    this.name = 'PreciseError';
    this.code = code;
    this.details = details;
  }

  get status(): number {
    return ERROR_STATUS[this.code];
  }

  toBody(requestId?: string) {
    return { error: { code: this.code, message: this.message, details: this.details, request_id: requestId } };
  }
}
