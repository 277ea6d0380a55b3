/** Limits of the ingestion contract (ARCHITECTURE.md, "Product contract, v1"). */
export const LIMITS = {
  /** events in one POST /v1/events */
  batchEvents: 1000,
  /** bytes of one POST /v1/events body */
  batchBytes: 1024 * 1024,
  /** events in one beacon (POST /v1/px) */
  beaconEvents: 100,
  /** bytes of one beacon body */
  beaconBytes: 256 * 1024,
  /** bytes of an event's properties, serialised */
  propertiesBytes: 8 * 1024,
  /** keys of an event's properties */
  propertiesKeys: 64,
  /** nesting depth of properties */
  propertiesDepth: 4,
  /** data assets on one event */
  assetIds: 50,
  /** how far in the future an occurred_at may be (clock skew) */
  futureSkewMs: 24 * 3600 * 1000,
  /** how far in the past an occurred_at may be (late conversions, backfills) */
  maxAgeMs: 400 * 24 * 3600 * 1000,
  /** the largest |value| an event may carry (money and counts; beyond it is a sender's bug) */
  maxValue: 1e15,
  /** bytes of a raw payload kept in failed_events */
  failedPayloadBytes: 64 * 1024,
} as const;
