"""Files that survive a kill: written whole under a temporary name, fsynced, then renamed into
place (the directory fsynced too), with every failure (a full disk, a read-only directory)
named by its file. The write boundaries of a run call boundary(), the hook the kill tests use.

PRGE_TEST_SIGNAL_AT_WRITE=WHERE[@SIGNAL] (tests only): at a write boundary of the process (WHERE:
its 1-based number, or its name, e.g. "checkpoint-2: current") it sends itself SIGNAL (SIGKILL
by default; SIGINT2: two Ctrl-C), so that a test can stop a run before, between and after each
file it writes, deterministically."""
from __future__ import annotations

import json
import os
import signal
import shutil
import time
from pathlib import Path

from prge.interrupts import REPEAT_WINDOW_SECONDS

SIGNAL_AT_WRITE = "PRGE_TEST_SIGNAL_AT_WRITE"
_boundaries: list[str] = []


def boundary(what: str) -> None:
    """A point between two writes: whatever is on disk now must be resumable."""
    _boundaries.append(what)
    hook = os.environ.get(SIGNAL_AT_WRITE)
    if not hook:
        return
    at, _, name = hook.rpartition("@") if "@" in hook else (hook, "", "")
    if at != what and not (at.isdigit() and int(at) == len(_boundaries)):
        return
    name = name or "SIGKILL"
    if name == "SIGINT2":  # a second Ctrl-C arriving while the first one's checkpoint is written
        os.kill(os.getpid(), signal.SIGINT)
        _let_handlers_run()
        time.sleep(REPEAT_WINDOW_SECONDS + 0.05)  # a second press, not the first one delivered twice
        name = "SIGINT"
    os.kill(os.getpid(), getattr(signal, name))
    _let_handlers_run()


def _let_handlers_run() -> None:
    """Python runs a signal's handler at its next check, e.g. a function's start: here."""


def _failed(path: Path, error: OSError) -> OSError:
    return OSError(f"{path}: cannot write ({error.strerror or error})")


def usual_mode(path: Path) -> None:
    """The permissions open() would give a new file (0666 less the umask) on one that safetensors
    created, which it makes 0600: an exported model or adapter is as readable as the rest."""
    mask = os.umask(0o022)
    os.umask(mask)
    try:
        os.chmod(path, 0o666 & ~mask)
    except OSError as e:
        raise _failed(Path(path), e) from e


def fsync_file(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as e:
        raise _failed(Path(path), e) from e


def fsync_dir(path: Path) -> None:
    """Makes the renames inside `path` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_text(path: Path, text: str) -> None:
    """`path` holds `text` whole, or keeps what it held: never a part of it."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise _failed(path, e) from e
    fsync_dir(path.parent)


def write_json(path: Path, value) -> None:
    write_text(path, json.dumps(value, indent=2))


def read_json(path: Path, what: str = "JSON"):
    """The JSON value in `path`; ValueError naming the file for bad bytes or a cut-off file."""
    path = Path(path)
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start}); "
                         f"not a {what} prge wrote") from e
    except json.JSONDecodeError as e:
        reason = "empty" if not e.doc.strip() else f"malformed at line {e.lineno}, column {e.colno} ({e.msg})"
        raise ValueError(f"{path}: {reason}; not a complete {what} (cut off by a crash or edited?)") from e


def copy_contents(source: Path, target: Path) -> Path:
    """Copies a file's contents to a new file `target` (a file there first removed: one left
    read-only cannot block it), which gets the mode the umask gives, not the source's."""
    remove(target)
    shutil.copyfile(source, target)
    return Path(target)


def remove(path: Path) -> None:
    """Deletes a file or a directory tree, if present."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


class NamedAppend:
    """A text file opened for appending whose write errors name the file (a full disk)."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        try:
            self._file = open(path, "a", encoding="utf-8")
        except OSError as e:
            raise _failed(self.path, e) from e

    def write(self, text: str) -> None:
        try:
            self._file.write(text)
        except OSError as e:
            raise _failed(self.path, e) from e

    def flush(self) -> None:
        try:
            self._file.flush()
        except OSError as e:
            raise _failed(self.path, e) from e

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        try:
            self._file.close()
        except OSError as e:
            if exc[0] is None:
                raise _failed(self.path, e) from e
