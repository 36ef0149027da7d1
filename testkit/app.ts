import express from 'express';
import type { NextFunction, Request, Response } from 'express';
import { type MirrorStatic, mirrorStatic } from '../middleware/static/mirror-static.js';
import type { StaticOptions } from '../middleware/options.js';
import { memoryLogger } from './logger.js';
import { type Running, listen } from './server.js';

export interface TestApp extends Running {
  readonly mw: MirrorStatic;
}

export { memoryLogger };

/**
 * An Express app with mirrorStatic in front, an app 404 behind it (to see
 * fallthrough) and an error handler that shows the status passed to next(err).
 */
export async function startApp(options: StaticOptions, mountPath = '/'): Promise<TestApp> {
  const mw = mirrorStatic({ logger: memoryLogger(), ...options });
  const app = express();
  app.get('/metrics', mw.metrics);
  app.use(mountPath, mw);
  app.use((_req: Request, res: Response) => {
    const pinned = res.locals.mirrorswap as { slot?: string } | undefined;
    if (pinned?.slot) res.set('X-Resolved-Slot', pinned.slot);
    res.status(404).type('text').send('app fallthrough');
  });
  app.use((err: { status?: number }, _req: Request, res: Response, _next: NextFunction) => {
    res
      .status(err.status ?? 500)
      .type('text')
      .send(`error ${err.status ?? 500}`);
  });
  await mw.ready;
  const running = await listen(app);
  return {
    ...running,
    mw,
    async close() {
      await running.close();
      await mw.close();
    },
  };
}
