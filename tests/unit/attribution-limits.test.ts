import { describe, expect, it } from 'vitest';
import { assertMarkovAffordable, MARKOV_INTERVAL_MAX_CHANNELS, MARKOV_MAX_CHANNELS } from '../../core/attribution-query.ts';
import { PreciseError } from '../../core/errors.ts';

describe('what one attribution request may make Markov cost', () => {
  const refusal = (channels: number, interval: boolean) => {
    try {
      assertMarkovAffordable(channels, interval);
      return null;
    } catch (error) {
      expect(error).toBeInstanceOf(PreciseError);
      return { status: (error as PreciseError).status, field: (error as PreciseError).details.field };
    }
  };

  it('answers up to its channel bounds', () => {
    expect(refusal(MARKOV_MAX_CHANNELS, false)).toBeNull();
    expect(refusal(MARKOV_INTERVAL_MAX_CHANNELS, true)).toBeNull();
  });

  it('refuses more channels with a 400 naming the parameter, never a request that holds the thread for minutes', () => {
    expect(refusal(MARKOV_MAX_CHANNELS + 1, false)).toEqual({ status: 400, field: 'dimension' });
    expect(refusal(MARKOV_INTERVAL_MAX_CHANNELS + 1, true)).toEqual({ status: 400, field: 'interval' });
  });
});
