#!/usr/bin/env node
// The threadpool runs every fs call; its size is read once, at its first use,
// so it is set before anything else loads. Copies and compares keep many
// calls in flight, and 4 threads (the default) starve them.
process.env.UV_THREADPOOL_SIZE ??= '16';
await import('./main.js');
