/**
 * Quiet logger that remembers what it was told. A module of its own so that a test needing only a
 * logger does not load Express and the middleware with `app.ts` (about 0.2 s of CPU per test file).
 */
export function memoryLogger() {
  const lines: { level: string; msg: string; obj: object }[] = [];
  const at = (level: string) => (obj: object, msg: string) => lines.push({ level, msg, obj });
  return { lines, warn: at('warn'), error: at('error'), info: at('info') };
}
