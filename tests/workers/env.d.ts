import type { Bindings } from '../../functions/env.ts';

declare global {
  namespace Cloudflare {
    interface Env extends Bindings {
      TEST_DATABASE_URL: string;
      TEST_ORG_ID: string;
      TEST_PUBLISHABLE_KEY: string;
      TEST_INGEST_KEY: string;
      TEST_POSTBACK_TOKEN: string;
      TEST_INTEGRATION_ID: string;
    }
    interface GlobalProps {
      mainModule: typeof import('../../worker.ts');
    }
  }
}
