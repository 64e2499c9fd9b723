/** The collector's request errors: an HTTP status, a stable machine code, and a message that names the fault. */

export type IngestErrorCode =
  | "malformed"
  | "missing-attribute"
  | "mixed-batch"
  | "stale-batch"
  | "clock-skew"
  | "too-large"
  | "too-many-records"
  | "unsupported-media-type"
  | "unsupported-encoding"
  | "unauthenticated"
  | "forbidden"
  | "duplicate-batch"
  | "not-found"
  | "method-not-allowed"
  | "storage-unavailable";

export class IngestError extends Error {
  constructor(
    readonly status: number,
    readonly code: IngestErrorCode,
    message: string,
    /** For the collector's own log only, never the answer: e.g. the storage's words on why it failed. */
    readonly detail?: string,
  ) {
    super(message);
    this.name = "IngestError";
  }
}

/** The gRPC status code matching an HTTP status, for the google.rpc.Status body OTLP/HTTP answers errors with. */
export function grpcCodeOf(httpStatus: number): number {
  switch (httpStatus) {
    case 400:
    case 415:
      return 3; // INVALID_ARGUMENT
    case 401:
      return 16; // UNAUTHENTICATED
    case 403:
      return 7; // PERMISSION_DENIED
    case 404:
      return 5; // NOT_FOUND
    case 405:
      return 12; // UNIMPLEMENTED
    case 409:
      return 6; // ALREADY_EXISTS
    case 413:
      return 8; // RESOURCE_EXHAUSTED
    case 503:
      return 14; // UNAVAILABLE: OTLP's retryable code
    default:
      return httpStatus >= 500 ? 13 : 2; // INTERNAL : UNKNOWN
  }
}
