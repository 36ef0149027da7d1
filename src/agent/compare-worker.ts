import { parentPort, workerData } from 'node:worker_threads';
import { compareTreesSync } from './compare-trees.js';

const { source, target, limit } = workerData as { source: string; target: string; limit: number };
parentPort?.postMessage(compareTreesSync(source, target, limit < 0 ? Number.POSITIVE_INFINITY : limit));
