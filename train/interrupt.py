"""Ctrl-C (and SIGTERM) become a request to stop *between* steps.

A signal arriving mid-step would leave the data order and RNG states half
advanced, so the checkpoint written on the way out could not resume exactly.
The first signal sets a flag the loop checks after each step; a second one
raises KeyboardInterrupt at once for a user who really wants out.

A signal the process inherited as ignored stays ignored, as Python itself leaves it: a
shell starts `began train ... &` with SIGINT ignored so that a Ctrl-C meant for the
foreground job does not reach it, and `nohup` does the same for SIGHUP.
"""

from __future__ import annotations

import signal
import threading


class StopRequest:
    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():  # signals need the main thread
            for sig in (signal.SIGINT, signal.SIGTERM):
                if signal.getsignal(sig) is not signal.SIG_IGN:
                    self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: object) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    @property
    def exit_code(self) -> int:
        return 128 + (self.signum or signal.SIGINT)
