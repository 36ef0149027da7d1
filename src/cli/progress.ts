/**
 * One self-rewriting status line on stderr, only when it is a terminal; a
 * log file or a pipe gets nothing from it.
 */
export function progressLine(stream: NodeJS.WriteStream = process.stderr) {
  const tty = stream.isTTY === true;
  const started = Date.now();
  let last = 0;
  return {
    update(text: string, bytes?: number): void {
      if (!tty) return;
      const now = Date.now();
      if (now - last < 100) return;
      last = now;
      const secs = (now - started) / 1000;
      const rate = bytes !== undefined && secs > 0 ? ` (${(bytes / 1048576 / secs).toFixed(1)} MiB/s)` : '';
      stream.write(`\r\u001b[2K${text}${rate}`);
    },
    done(): void {
      if (tty && last > 0) stream.write('\r\u001b[2K');
    },
  };
}
