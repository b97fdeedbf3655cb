"""Progress bars for training and evaluation loops (tqdm when installed and enabled)."""
from __future__ import annotations

import contextlib


def progress_bar(total: int, enabled: bool, desc: str = "train", unit: str = "step", initial: int = 0):
    if not enabled or total == 0:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, initial=initial)


def above(bar):
    """A context in which lines written to the terminal go above `bar` (a progress_bar, or None)
    instead of through it (tqdm.external_write_mode)."""
    if bar is None:
        return contextlib.nullcontext()
    return bar.external_write_mode()


def closed_at_exit(bar):
    """A context that closes `bar` (a progress_bar, or None) however it is left, so that an
    interruption's or error's message starts its own line."""
    return contextlib.nullcontext() if bar is None else contextlib.closing(bar)
