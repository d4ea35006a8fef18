"""One rule for every folder or file a ``bafenet`` command writes: it deletes or replaces only what it wrote itself.

* A folder a command writes gets a marker, ``.bafenet-output.json``, naming the command and the files it wrote.
  Only a folder carrying the marker of the same command, and holding nothing but the files listed there, is replaced
  on a re-run. ``--overwrite`` also replaces such a folder when files were added to it since; a folder without
  our marker is never deleted unless it is empty.
* Never written over, whatever the flags: the current directory or one of its parents, the home folder, the root,
  an input of the command or a folder holding one.
* Folders are written to a temporary sibling and renamed into place (`replaced_dir`), files to a temporary name and
  `os.replace`d (`written_file`), so an interrupted command never leaves a half-written output under the real name.
* A lock file beside the output (`OutputLock`: ``O_EXCL`` create, holding pid, host and command) keeps a second
  writer out; a lock whose process is dead on this host is taken over.

Every refusal is a `UserError`: one line naming the folder or option and the way out (`bafenet.cli` prints it).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import json
import os
import shutil
import socket
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

__all__ = ["MARKER", "UserError", "OutputLock", "check_not_protected", "folder_owner", "foreign_files",
           "claim_dir", "replaced_dir", "write_marker", "check_output_file", "written_file", "error_line"]

MARKER = ".bafenet-output.json"
_SHOWN = 3  # foreign files named in a message


class UserError(Exception):
    """A problem with what the user asked for (path, option, input file): one line naming it and the fix."""


def error_line(error: BaseException) -> str:
    """The one line a user sees for ``error``: the file or option it names, what is wrong, the fix when known."""
    if isinstance(error, OSError) and error.strerror:
        where = f"{error.filename}: " if error.filename is not None else ""
        hint = {errno.ENOSPC: "; free some space or write elsewhere",
                errno.EACCES: "; check the permissions or write elsewhere",
                errno.EROFS: "; write elsewhere"}.get(error.errno, "")
        return f"{where}{error.strerror}{hint}"
    return " ".join(str(error).split()) or type(error).__name__  # one line, whatever the message


def _resolved(path: str | Path) -> Path:
    return Path(path).expanduser().resolve()


def _is_within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_not_protected(out: str | Path, inputs: Iterable[str | Path] = (), option: str = "--out") -> None:
    """Refuse ``out`` when it is the current directory or a parent of it, the home folder, the root, or an input
    (or a folder holding one) of the command."""
    target = _resolved(out)
    cwd = Path.cwd().resolve()
    reason = None
    if target == Path(target.anchor):
        reason = "is the root folder"
    elif target == Path.home().resolve():
        reason = "is your home folder"
    elif _is_within(cwd, target):
        reason = "is the current directory" if target == cwd else "holds the current directory"
    else:
        for item in inputs:
            if item is not None and _is_within(_resolved(item), target):
                reason = f"is or holds the input {item}"
                break
    if reason:
        raise UserError(f"{option} {out}: {reason}; bafenet never writes over it, pass a new folder such as "
                        f"{Path(out) / 'bafenet-output'}")


def read_marker(folder: Path) -> dict[str, Any] | None:
    """The marker of ``folder`` (a dict), or None when there is none or it is not ours (unreadable JSON)."""
    path = folder / MARKER
    if not path.is_file():
        return None
    try:
        marker = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and isinstance(marker.get("command"), str) else None


def folder_owner(folder: str | Path) -> str | None:
    """The command that wrote ``folder`` (its marker's ``command``), or None."""
    marker = read_marker(Path(folder))
    return None if marker is None else marker["command"]


def _listing(folder: Path) -> dict[str, int]:
    """Every file below ``folder`` (relative POSIX path -> size), links included as files, marker excluded."""
    files: dict[str, int] = {}
    for root, dirs, names in os.walk(folder):
        for name in names + [d for d in dirs if Path(root, d).is_symlink()]:
            path = Path(root, name)
            rel = path.relative_to(folder).as_posix()
            if rel != MARKER:
                files[rel] = path.lstat().st_size
    return files


def foreign_files(folder: str | Path) -> list[str]:
    """Files of ``folder`` its marker does not list with the same size (added or changed since); a marker without a
    file list (a run that has not finished) owns everything."""
    folder = Path(folder)
    marker = read_marker(folder)
    listed = None if marker is None else marker.get("files")
    if listed is None:
        return [] if marker is not None else sorted(_listing(folder))
    return sorted(rel for rel, size in _listing(folder).items() if listed.get(rel) != size)


def write_marker(folder: str | Path, command: str, finished: bool = True, **extra: Any) -> None:
    """Mark ``folder`` as written by ``command``; ``finished`` lists its files (re-runs check them). No time stamp:
    the same output gives the same bytes."""""
    folder = Path(folder)
    marker = {"command": command, **extra, "files": _listing(folder) if finished else None}
    (folder / MARKER).write_text(json.dumps(marker, indent=1) + "\n")


def _describe(files: Sequence[str]) -> str:
    more = f" and {len(files) - _SHOWN} more" if len(files) > _SHOWN else ""
    return ", ".join(files[:_SHOWN]) + more


def claim_dir(out: str | Path, command: str, *, inputs: Iterable[str | Path] = (), overwrite: bool = False,
              option: str = "--out") -> bool:
    """Check that ``command`` may (re)write the folder ``out``; returns True when it holds an earlier output of ours.

    Allowed: a missing or empty folder; a folder with the marker of ``command`` holding only the files it lists (or,
    with ``overwrite``, files added since too). Refused with a `UserError` otherwise.
    """
    check_not_protected(out, inputs, option)
    path = Path(out).expanduser()
    if path.exists() and not path.is_dir():
        raise UserError(f"{option} {out}: is a file, not a folder; pass a folder path")
    if not path.exists() or not any(path.iterdir()):
        return False
    owner = folder_owner(path)
    if owner is None:
        raise UserError(f"{option} {out}: folder is not empty and was not written by bafenet (no {MARKER}); "
                        "pass a new or empty folder (bafenet never deletes folders it did not write)")
    if owner != command:
        raise UserError(f"{option} {out}: holds the output of `bafenet {owner}`, not of `bafenet {command}`; "
                        "pass a new or empty folder")
    foreign = foreign_files(path)
    if foreign and not overwrite:
        raise UserError(f"{option} {out}: an earlier `bafenet {command}` output to which files were added or changed "
                        f"({_describe(foreign)}); move them out, or pass --overwrite to replace the folder with them")
    return True


def _remove_dir(path: Path) -> None:
    """Delete a folder bafenet wrote (its marker is checked once more right before)."""
    if path.exists():
        if read_marker(path) is None and any(path.iterdir()):
            raise UserError(f"{path}: lost its {MARKER} while bafenet was writing; left untouched")
        shutil.rmtree(path)


@contextlib.contextmanager
def replaced_dir(out: str | Path, command: str, *, inputs: Iterable[str | Path] = (), overwrite: bool = False,
                 option: str = "--out", **marker: Any) -> Iterator[Path]:
    """Write a folder in a temporary sibling and rename it into ``out`` when the block succeeds.

    ``out`` is checked with `claim_dir` (an earlier output of ours is replaced) and locked while the block runs; the
    marker (``command`` and the files written) is added last. On an error the temporary sibling is removed and
    ``out`` is left as it was.
    """
    out = Path(out).expanduser()
    claim_dir(out, command, inputs=inputs, overwrite=overwrite, option=option)
    out.parent.mkdir(parents=True, exist_ok=True)
    with OutputLock(out, command):
        claim_dir(out, command, inputs=inputs, overwrite=overwrite, option=option)  # unchanged since the lock
        tmp = out.parent / f".{out.name}.bafenet-tmp-{os.getpid()}"
        old = out.parent / f".{out.name}.bafenet-old-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            yield tmp
            write_marker(tmp, command, **marker)
            if out.exists():
                out.rename(old)
            tmp.rename(out)
            _remove_dir(old)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def check_output_file(out: str | Path, *, inputs: Iterable[str | Path] = (), overwrite: bool = False,
                      option: str = "--out", ours: Callable[[Path], bool] | None = None) -> Path:
    """Check that a command may write the file ``out``: not a folder, not an input; an existing file only when
    ``ours(path)`` recognises an earlier output of the command, or with ``overwrite``."""
    path = Path(out).expanduser()
    check_not_protected(path, inputs, option)
    if path.is_dir():
        raise UserError(f"{option} {out}: is a folder; pass a file name inside it, e.g. {path / 'out'}{path.suffix}")
    if path.exists() and not overwrite and not (ours is not None and ours(path)):
        raise UserError(f"{option} {out}: file exists and was not written by this command; pass another {option}, "
                        "or --overwrite to replace it")
    return path


@contextlib.contextmanager
def written_file(out: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``out`` to write; it replaces ``out`` (atomically) when the block succeeds."""
    out = Path(out).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.stem}.bafenet-tmp-{os.getpid()}{out.suffix}"
    try:
        yield tmp
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class OutputLock:
    """``<parent>/.<name>.bafenet-lock`` beside ``out``, created with ``O_EXCL`` while one command writes ``out``.

    A second writer gets a `UserError` naming the holder (command, pid, host, start). A lock left by a process that
    no longer runs on this host (a killed run) is taken over. Re-entrant within one process.
    """

    def __init__(self, out: str | Path, command: str) -> None:
        out = Path(out).expanduser().absolute()
        self.path = out.parent / f".{out.name}.bafenet-lock"
        self.out, self.command, self.held = out, command, False

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def _holder(self) -> dict[str, Any]:
        try:
            holder = json.loads(self.path.read_text())
            return holder if isinstance(holder, dict) else {}
        except (OSError, ValueError):
            return {}

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command,
              "since": _dt.datetime.now().isoformat(timespec="seconds")}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                same_host = holder.get("host") == me["host"]
                if same_host and holder.get("pid") == me["pid"]:
                    return  # this process holds it already (e.g. quickstart's steps)
                if same_host and isinstance(holder.get("pid"), int) and not _pid_alive(holder["pid"]):
                    self.path.unlink(missing_ok=True)  # stale: its process is gone
                    continue
                if not holder:  # being written right now, or garbage: look once more
                    continue
                raise UserError(
                    f"{self.out}: in use by `bafenet {holder.get('command', '?')}` (pid {holder.get('pid')} on "
                    f"{holder.get('host')} since {holder.get('since')}); wait for it to end, or delete {self.path} "
                    "if that process is gone"
                ) from None
            with os.fdopen(fd, "w") as handle:
                json.dump(me, handle)
            self.held = True
            return
        raise UserError(f"{self.out}: could not take the lock {self.path}; delete it if no bafenet command runs")

    def release(self) -> None:
        if self.held:
            if self._holder().get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)
            self.held = False
