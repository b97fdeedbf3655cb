"""Ctrl-C (SIGINT) and SIGTERM during a run: what torchrun sends every rank on Ctrl-C, and what
schedulers send before preempting a job.

The first one asks the run to stop at the next safe point (after the step or evaluation in
flight, with a checkpoint); a second one stops at once (StopNow), except while a file is being
written (`writing()`): it is held until the file is complete, so no Ctrl-C ever leaves a
half-written checkpoint or final weights."""
from __future__ import annotations

import signal
from contextlib import contextmanager

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopNow(KeyboardInterrupt):
    """A second Ctrl-C or SIGTERM: stop without waiting for the step in flight."""


class StopSignals:
    def __init__(self, on_repeat=None):
        self.count = 0
        self._writing = 0
        self._held = False
        self._on_repeat = on_repeat  # called with the signal number instead of StopNow

    def requested(self) -> bool:
        """Whether a Ctrl-C or SIGTERM arrived."""
        return self.count > 0

    def _handle(self, signum, frame) -> None:
        self.count += 1
        if self.count < 2:
            return
        if self._on_repeat:
            self._on_repeat(signum)
            return
        if self._writing:
            self._held = True
        else:
            raise StopNow

    @contextmanager
    def writing(self):
        """A file write that no signal cuts short; a second signal that arrived during it
        stops the run right after it."""
        self._writing += 1
        try:
            yield
        finally:
            self._writing -= 1
        if not self._writing and self._held:
            self._held = False
            raise StopNow


@contextmanager
def stop_signals(on_repeat=None):
    """Installs the handlers for the body (main thread only; elsewhere signals behave as
    usual and nothing is ever requested) and yields the StopSignals. `on_repeat(signum)`, when
    given, takes every signal after the first instead of StopNow (a sweep passes it on to its
    runs: prge.sweep_gpus)."""
    signals = StopSignals(on_repeat)
    try:
        previous = {sig: signal.signal(sig, signals._handle) for sig in STOP_SIGNALS}
    except ValueError:  # not the main thread
        yield signals
        return
    try:
        yield signals
    finally:
        for sig, before in previous.items():
            signal.signal(sig, before)
