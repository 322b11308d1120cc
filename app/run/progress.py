"""Progress on the terminal: a bar on a TTY, a line every tenth of the way otherwise."""
from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, label: str, total: int | None, stream=None):
        self.label, self.total = label, total
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.started = time.monotonic()
        self._last_print = 0.0
        self._last_decile = -1

    def __call__(self, done: int, total: int | None = None) -> None:
        total = total or self.total
        now = time.monotonic()
        rate = done / (now - self.started) if now > self.started else 0.0
        if total:
            frac = min(1.0, done / total)
            if self.tty:
                if now - self._last_print < 0.1 and done < total:
                    return
                bar = "#" * int(frac * 30)
                self.stream.write(f"\r{self.label} [{bar:<30}] {done}/{total} {rate:5.1f}/s")
                if done >= total:
                    self.stream.write("\n")
            else:
                decile = int(frac * 10)
                if decile == self._last_decile:
                    return
                self._last_decile = decile
                self.stream.write(f"{self.label}: {done}/{total} ({frac:.0%}) {rate:.1f}/s\n")
        elif now - self._last_print >= 1.0:
            lead, tail = ("\r", "") if self.tty else ("", "\n")
            self.stream.write(f"{lead}{self.label}: {done} {rate:.1f}/s{tail}")
        else:
            return
        self._last_print = now
        self.stream.flush()

    def close(self):
        if self.tty and not self.total:
            self.stream.write("\n")
            self.stream.flush()
