import { parentPort, workerData } from 'node:worker_threads';
import { compareTreesSync } from './compare-trees.js';

const { source, target, limit, index, of, under } = workerData as {
  source: string;
  target: string;
  limit: number;
  index: number;
  of: number;
  under?: string[];
};
parentPort?.postMessage(
  compareTreesSync(source, target, limit < 0 ? Number.POSITIVE_INFINITY : limit, { index, of }, under),
);
