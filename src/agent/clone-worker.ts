import { parentPort, workerData } from 'node:worker_threads';
import { type CloneJob, cloneTreesSync } from './clone-trees.js';

const { source, jobs } = workerData as { source: string; jobs: CloneJob[] };
parentPort?.postMessage(cloneTreesSync(source, jobs));
