"""One rule for every folder or file a ``bafenet`` command writes: it deletes or replaces only what it wrote itself.

* A folder a command writes gets a marker, ``.bafenet-output.json``, naming the command and the files it wrote
  (size and SHA-256 of each). Only a folder carrying the marker of the same command, and holding nothing but the
  files listed there with their content unchanged, is replaced on a re-run. ``--overwrite`` also replaces such a
  folder when files were added or edited since; a folder without our marker is never deleted unless it is empty.
  (Older markers list sizes only; they are still read, by size.)
* Containment (`check_not_protected`), whatever the flags: an output is refused when it is the current directory or
  one of its parents, the home folder, the root, or when it is, holds or lies inside any input of the command
  (model, dataset, devkit, images, predictions file), compared after resolving symbolic links. An ``--out`` that is
  itself a symbolic link is refused (pass its target): replacing it would replace the link, not what it points to.
* Folders are written to a temporary sibling and renamed into place (`replaced_dir`), files to a temporary name and
  `os.replace`d (`written_file`), so an interrupted command never leaves a half-written output under the real name.
  Temporary siblings of the same output left by a killed run (``.NAME.bafenet-tmp-PID``, ``.NAME.bafenet-old-PID``,
  their PID no longer running) are deleted when the next run starts.
* A lock beside the output (`OutputLock`: ``.NAME.bafenet-lock``) keeps a second writer out. It is a kernel lock
  (``flock``) on that file, which the kernel releases when the holder ends however it ends (killed, full disk); the
  file's content (pid, host, command) only names the holder in the message. A lock file nobody holds is taken over,
  whatever it contains (empty after a full disk, or left by a killed run).

Every refusal is a `UserError`: one line naming the folder or option and the way out (`bafenet.cli` prints it).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import socket
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

__all__ = ["MARKER", "UserError", "OutputLock", "check_not_protected", "folder_owner", "foreign_files",
           "claim_dir", "replaced_dir", "write_marker", "check_output_file", "written_file", "error_line",
           "file_sha256", "temporary_sibling", "remove_abandoned"]

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


def _containment(target: Path, inputs: Iterable[str | Path | None]) -> str | None:
    """Why ``target`` (resolved) may not be written given the command's ``inputs``, or None."""
    for item in inputs:
        if item is None or not Path(item).expanduser().exists():
            continue  # a Hub id, or a path that a later check reports
        source = _resolved(item)
        if _is_within(source, target):
            return f"is or holds the input {item}"
        if _is_within(target, source):
            return f"lies inside the input {item}"
    return None


def check_not_protected(out: str | Path, inputs: Iterable[str | Path | None] = (), option: str = "--out") -> None:
    """Refuse ``out`` when it is a symbolic link, the current directory or a parent of it, the home folder, the root,
    or when it is, holds or lies inside any of the command's ``inputs`` (local paths; others are skipped)."""
    if Path(out).expanduser().is_symlink():
        target = os.readlink(Path(out).expanduser())
        raise UserError(f"{option} {out}: is a symbolic link (to {target}); bafenet does not write through links, "
                        f"pass the target itself")
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
        reason = _containment(target, inputs)
        if reason:
            raise UserError(f"{option} {out}: {reason}; bafenet never writes over, into or around an input, "
                            "pass a path outside it")
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


def _paths(folder: Path) -> dict[str, Path]:
    """Every file below ``folder`` (relative POSIX path -> path), links included as files, marker excluded."""
    files: dict[str, Path] = {}
    for root, dirs, names in os.walk(folder):
        for name in names + [d for d in dirs if Path(root, d).is_symlink()]:
            path = Path(root, name)
            rel = path.relative_to(folder).as_posix()
            if rel != MARKER:
                files[rel] = path
    return files


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes (of the link text for a symbolic link: it is never followed)."""
    if path.is_symlink():
        return hashlib.sha256(os.readlink(path).encode()).hexdigest()
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _unchanged(path: Path, listed: Any) -> bool:
    """Whether ``path`` still is what a marker entry recorded: ``{"size", "sha256"}`` (or a bare size, old markers)."""
    size = path.lstat().st_size
    if isinstance(listed, dict):
        return listed.get("size") == size and listed.get("sha256") == file_sha256(path)
    return listed == size


def foreign_files(folder: str | Path) -> list[str]:
    """Files of ``folder`` its marker does not list with the same content (added or edited since); a marker without a
    file list (a run that has not finished) owns everything."""
    folder = Path(folder)
    marker = read_marker(folder)
    listed = None if marker is None else marker.get("files")
    if listed is None:
        return [] if marker is not None else sorted(_paths(folder))
    return sorted(rel for rel, path in _paths(folder).items() if not _unchanged(path, listed.get(rel)))


def write_marker(folder: str | Path, command: str, finished: bool = True, **extra: Any) -> None:
    """Mark ``folder`` as written by ``command``; ``finished`` lists its files (re-runs check them). No time stamp:
    the same output gives the same bytes."""""
    folder = Path(folder)
    files = {rel: {"size": path.lstat().st_size, "sha256": file_sha256(path)} for rel, path in _paths(folder).items()}
    marker = {"command": command, **extra, "files": files if finished else None}
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
    inputs = list(inputs)
    claim_dir(out, command, inputs=inputs, overwrite=overwrite, option=option)
    out.parent.mkdir(parents=True, exist_ok=True)
    with OutputLock(out, command):
        claim_dir(out, command, inputs=inputs, overwrite=overwrite, option=option)  # unchanged since the lock
        tmp, old = temporary_sibling(out), temporary_sibling(out, "old")
        remove_abandoned(out)
        tmp.mkdir()
        try:
            write_marker(tmp, command, finished=False)  # so a later run knows it as bafenet's if this one is killed
            with _naming(out):
                yield tmp
                write_marker(tmp, command, **marker)
            if out.exists():
                out.rename(old)
            tmp.rename(out)
            _remove_dir(old)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def temporary_sibling(out: Path, kind: str = "tmp", pid: int | None = None) -> Path:
    """``<parent>/.<stem>.bafenet-<kind>-<pid><suffix>``: where this process writes ``out`` before renaming it."""
    return out.parent / f".{out.stem}.bafenet-{kind}-{os.getpid() if pid is None else pid}{out.suffix}"


def remove_abandoned(out: Path) -> list[Path]:
    """Delete the temporary siblings of ``out`` (`temporary_sibling`) whose process no longer runs (a killed run
    of a command writing ``out``); returns them. Only bafenet writes names of that form, and a folder is deleted
    only when it holds bafenet's marker (written first into every temporary folder)."""
    pattern = re.compile(rf"\.{re.escape(out.stem)}\.bafenet-(?:tmp|old)-(\d+){re.escape(out.suffix)}")
    removed = []
    for path in out.parent.glob(f".{glob_escape(out.stem)}.bafenet-*"):
        match = pattern.fullmatch(path.name)
        if match and int(match.group(1)) != os.getpid() and not _pid_alive(int(match.group(1))):
            if path.is_dir() and not path.is_symlink():
                if read_marker(path) is None:
                    continue  # not a folder bafenet wrote: left alone
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(path)
    return removed


def glob_escape(text: str) -> str:
    """``text`` with glob wildcards escaped (``[*]``), for `Path.glob`."""
    return re.sub(r"([*?\[])", r"[\1]", text)


@contextlib.contextmanager
def _naming(out: Path) -> Iterator[None]:
    """Re-raise an OSError that names no file (a full disk while writing) as one naming ``out``."""
    try:
        yield
    except OSError as error:
        if error.filename is not None or not error.strerror:
            raise
        raise OSError(error.errno, error.strerror, str(out)) from error


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
    tmp = temporary_sibling(out)
    remove_abandoned(out)
    try:
        with _naming(out):
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
    """``<parent>/.<name>.bafenet-lock`` beside ``out``, held with ``flock`` while one command writes ``out``.

    The kernel releases the lock when its process ends, however it ends, so a lock file nobody holds is taken over
    whatever it contains (empty after a full disk, left by a killed run). A second writer gets a `UserError` naming
    the holder recorded in the file (command, pid, host, start). Re-entrant within one process.
    """

    def __init__(self, out: str | Path, command: str) -> None:
        out = Path(out).expanduser().absolute()
        self.path = out.parent / f".{out.name}.bafenet-lock"
        self.out, self.command, self.held, self.fd = out, command, False, -1

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

    def _refuse(self, me: dict[str, Any]) -> None:
        """The lock is held by a live process: return when it is this one (re-entry), else raise naming it."""
        holder = self._holder()
        if holder.get("host") == me["host"] and holder.get("pid") == me["pid"]:
            return
        who = (f"`bafenet {holder.get('command')}` (pid {holder.get('pid')} on {holder.get('host')} since "
               f"{holder.get('since')})" if holder else "another bafenet command (starting)")
        raise UserError(f"{self.out}: in use by {who}; wait for it to end (the lock {self.path} is released when it "
                        "does)")

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command,
              "since": _dt.datetime.now().isoformat(timespec="seconds")}
        for _ in range(3):
            fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return self._refuse(me)
            if not self.path.exists() or os.stat(self.path).st_ino != os.fstat(fd).st_ino:
                os.close(fd)  # its holder removed the file between our open and our lock: take the new one
                continue
            self.fd, self.held = fd, True
            try:
                os.ftruncate(fd, 0)
                os.write(fd, json.dumps(me).encode())
            except OSError as error:
                self.release()
                raise OSError(error.errno, error.strerror, str(self.path)) from error
            return
        raise UserError(f"{self.out}: could not take the lock {self.path}; another bafenet command keeps replacing it")

    def release(self) -> None:
        if self.held:
            with contextlib.suppress(OSError):
                if os.stat(self.path).st_ino == os.fstat(self.fd).st_ino:
                    self.path.unlink()
            os.close(self.fd)
            self.held, self.fd = False, -1
