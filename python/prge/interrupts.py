"""Ctrl-C (SIGINT) and SIGTERM during a run: what torchrun sends every rank on Ctrl-C, and what
schedulers send before preempting a job.

The first one asks the run to stop at the next safe point (after the step or evaluation in
flight, with a checkpoint); a second one stops at once (StopNow), except while a file is being
written (`writing()`): it is held until the file is complete, so no Ctrl-C ever leaves a
half-written checkpoint or final weights. A repeat within REPEAT_WINDOW_SECONDS of the first is
that same stop delivered twice, not a second one: `timeout` signals its command and then the
command's whole process group, and a terminal's Ctrl-C reaches a process that a parent may pass
it on to as well."""
from __future__ import annotations

import signal
import time
from contextlib import contextmanager

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
REPEAT_WINDOW_SECONDS = 0.25
_exit_follows_a_stop = False  # set by the prge command's process (ignore_signals_after_a_stop)


class StopNow(KeyboardInterrupt):
    """A second Ctrl-C or SIGTERM: stop without waiting for the step in flight."""


class StopSignals:
    def __init__(self, on_signal=None):
        self.count = 0
        self.first_at: float | None = None  # time.monotonic() of the first signal
        self._writing = 0
        self._held = False
        self._on_signal = on_signal  # called with (signal number, count) instead of StopNow

    def requested(self) -> bool:
        """Whether a Ctrl-C or SIGTERM arrived."""
        return self.count > 0

    def _handle(self, signum, frame) -> None:
        now = time.monotonic()
        if self.count == 1 and now - self.first_at < REPEAT_WINDOW_SECONDS:
            return  # the first stop, delivered twice
        self.count += 1
        if self.count == 1:
            self.first_at = now
        if self._on_signal:
            self._on_signal(signum, self.count)
            return
        if self.count < 2:
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
def stop_signals(on_signal=None):
    """Installs the handlers for the body (main thread only; elsewhere signals behave as
    usual and nothing is ever requested) and yields the StopSignals. `on_signal(signum, count)`,
    when given, is called for every signal counted, and no StopNow is raised (a sweep reports the
    first and passes later ones on to its runs: prge.sweep_gpus)."""
    signals = StopSignals(on_signal)
    try:
        previous = {sig: signal.signal(sig, signals._handle) for sig in STOP_SIGNALS}
    except ValueError:  # not the main thread
        yield signals
        return
    try:
        yield signals
    finally:
        ignore = _exit_follows_a_stop and signals.requested()
        for sig, before in previous.items():
            signal.signal(sig, signal.SIG_IGN if ignore else before)


def ignore_signals_after_a_stop() -> None:
    """For the prge command's own process (prge.cli.entry), where a stopped run or sweep is
    followed only by the process's exit: from the end of a stop_signals body that was signalled,
    SIGINT and SIGTERM are ignored, so that another Ctrl-C during the second or so of the exit
    (freeing the model, the interpreter's shutdown) cannot end the process by SIGINT with a
    traceback instead of its one `prge: error:` line and status 2. The checkpoint is written
    by then. A Python session that calls prge keeps its handlers: it never calls this."""
    global _exit_follows_a_stop
    _exit_follows_a_stop = True


def ignore_stop_signals() -> None:
    """SIGINT and SIGTERM ignored from here on (main thread; elsewhere nothing changes): the
    prge command's exit once its command has returned."""
    try:
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
    except ValueError:  # not the main thread
        pass
