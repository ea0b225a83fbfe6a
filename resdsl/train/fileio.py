"""Writing and reading files without losing anything: atomic replacement of regular files only, write-through to
devices and pipes, reading and appending only regular files, and a lock for what a process owns.

Every file resdsl writes goes through here (compiled outputs, drawings, checkpoints, run records). Write-temp-then-
rename is only right for regular files: applied to ``/dev/null`` or a named pipe it would replace the node with a
regular file, and applied to a symbolic link it would replace the link. So a path the user named
(:func:`write_output`) is a regular file (through any links) replaced atomically where it lies, or a character
device or a pipe with a reader written through, and anything else is refused with a clear message. A file resdsl
names itself in a folder it owns (:func:`write_owned`, :func:`atomic_write`, :func:`open_append`, the lock) is
its own: a link in its place is replaced or refused, never followed, since it could point anywhere.

This module imports from resdsl only :mod:`.dataerror` (both ship beside emitted trainers), and not torch.
"""
from __future__ import annotations

import errno
import os
import stat
import tempfile
import time
import weakref
from typing import BinaryIO, Callable

from .dataerror import Message

try:  # POSIX; on Windows runs are not locked (there is no fcntl)
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

# the temporary files of resdsl's writes (prefix, suffix): a process killed mid-write leaves one behind
TEMPORARY = (".resdsl-", ".tmp")


def is_temporary(name: str) -> bool:
    """Whether a file name is one of resdsl's temporary files (never a finished file of its own or a user's)."""
    return name.startswith(TEMPORARY[0]) and name.endswith(TEMPORARY[1])


class OutputError(Message):
    """A file could not be written; the message names the file and the reason, and says what was kept."""


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def atomic_write(path: str, fill: Callable[[BinaryIO], None]) -> None:
    """Create or replace the regular file ``path``: ``fill`` writes into a temporary file in the same folder, which
    is flushed to disk and renamed over ``path``; on any failure ``path`` is left as it was."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise OutputError(f"cannot write {path}: folder {folder} does not exist")
    try:  # a file replaced keeps its permissions; a new one (or one in place of a link) gets the umask's
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode):
            raise FileNotFoundError(path)
        mode = stat.S_IMODE(st.st_mode)
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=TEMPORARY[0], suffix=TEMPORARY[1])
        with os.fdopen(fd, "wb") as fh:
            fill(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
        tmp = None
        _fsync_folder(folder)
    except OSError as exc:
        kept = "the previous file is intact" if os.path.exists(path) else "nothing was written"
        raise OutputError(f"cannot write {path}: {_reason(exc)} ({kept})") from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def _fsync_folder(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some systems cannot open folders; the rename itself is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_output(path: str, data: bytes | str) -> None:
    """Write ``data`` to a path the user named as an output.

    A new path or a regular file (also behind symbolic links, which stay links) is replaced atomically; a character
    device (``/dev/null``, a terminal) or a named pipe with a reader is written through; a pipe without a reader,
    a dangling link, a folder, a block device or a socket is refused.
    """
    blob = data.encode() if isinstance(data, str) else data
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise OutputError(f"cannot write {path}: it is a symbolic link to {os.readlink(path)!r}, which does "
                              "not exist; remove the link or name another output") from None
        atomic_write(path, lambda fh: fh.write(blob))
        return
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {_reason(exc)}") from None
    real = os.path.realpath(path)
    if stat.S_ISREG(st.st_mode) and not real.startswith(("/proc/", "/dev/")):
        atomic_write(real, lambda fh: fh.write(blob))
    elif stat.S_ISREG(st.st_mode) or stat.S_ISCHR(st.st_mode):  # /dev/stdout to a file, /dev/null, a terminal
        _write_through(path, blob, os.O_WRONLY | os.O_APPEND if stat.S_ISREG(st.st_mode) else os.O_WRONLY)
    elif stat.S_ISFIFO(st.st_mode):
        _write_through(path, blob, os.O_WRONLY | os.O_NONBLOCK)
    elif stat.S_ISDIR(st.st_mode):
        raise OutputError(f"cannot write {path}: it is a folder; name a file inside it")
    else:
        raise OutputError(f"cannot write {path}: it is {file_kind(st.st_mode)}; resdsl writes only regular files, "
                          "character devices and pipes")


# Files are read and appended to only where they are regular files. Anything else is refused before it is opened
# (a named pipe or a terminal would block, /dev/zero never ends, opening some devices has side effects) and again
# from the open file itself, in case the path changed in between; O_NONBLOCK keeps even that open from waiting on a
# pipe. (A flag a system lacks is 0: Windows has no O_NONBLOCK, O_NOFOLLOW, O_NOCTTY.)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_READ = os.O_RDONLY | _NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
_APPEND = os.O_WRONLY | os.O_APPEND | os.O_CREAT | _NONBLOCK | getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)  # a link as the last part of a path is an error (ELOOP), not followed


def file_kind(mode: int) -> str | None:
    """What a file of ``mode`` (``st_mode``) is, in words, where it is not a regular file; None for one."""
    if stat.S_ISREG(mode):
        return None
    return ("a folder" if stat.S_ISDIR(mode) else "a named pipe" if stat.S_ISFIFO(mode) else
            "a character device" if stat.S_ISCHR(mode) else "a block device" if stat.S_ISBLK(mode) else
            "a socket" if stat.S_ISSOCK(mode) else "not a regular file")


def require_regular(path: str, mode: int) -> None:
    """OSError saying what ``path`` is, unless ``mode`` is a regular file's."""
    kind = file_kind(mode)
    if kind is not None:
        raise OSError(errno.EISDIR if stat.S_ISDIR(mode) else errno.EINVAL,
                      kind if kind.startswith("not") else f"it is {kind}, not a regular file", path)


def read_regular(path: str) -> bytes:
    """The bytes of a regular file (through links); OSError for anything else in its place, at once."""
    require_regular(path, os.stat(path).st_mode)
    fd = os.open(path, _READ)
    try:
        require_regular(path, os.fstat(fd).st_mode)
        if _NONBLOCK:
            os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=False) as fh:
            return fh.read()
    finally:
        os.close(fd)


def open_append(path: str, encoding: str | None = "utf-8"):
    """``path`` opened to append text, created if missing: a file resdsl keeps in a folder it owns (a run's log,
    its metrics). A symbolic link in its place is never followed (it could point anywhere), and anything but a
    regular file is refused; both raise OSError (errno ELOOP, EINVAL or EISDIR)."""
    try:
        fd = os.open(path, _APPEND | _NOFOLLOW, 0o666)
    except OSError as exc:
        if exc.errno == errno.ELOOP or os.path.islink(path):
            raise OSError(errno.ELOOP, "it is a symbolic link, which resdsl does not write through") from None
        if exc.errno == errno.ENXIO:  # a named pipe (or a socket) that nothing reads
            require_regular(path, os.stat(path).st_mode)
        raise
    try:
        require_regular(path, os.fstat(fd).st_mode)
        if _NONBLOCK:
            os.set_blocking(fd, True)
    except OSError:
        os.close(fd)
        raise
    return os.fdopen(fd, "a", encoding=encoding)


def write_owned(path: str, data: bytes | str) -> None:
    """Write ``data`` to a file resdsl names itself in a folder it owns (a run's or an experiment's report, figure,
    record): the entry is replaced atomically whatever it is, a symbolic link included, and nothing it points at
    is ever written (a folder in its place is refused). Unlike a path the user named (:func:`write_output`), where
    a link is the user's way of saying where the output goes."""
    blob = data.encode() if isinstance(data, str) else data
    if os.path.isdir(path) and not os.path.islink(path):
        raise OutputError(f"cannot write {path}: it is a folder")
    atomic_write(path, lambda fh: fh.write(blob))


def remove_owned(path: str) -> None:
    """Remove a file resdsl names itself in a folder it owns, where there is one (a link is removed, never what it
    points at; a folder is left)."""
    try:
        if os.path.islink(path) or os.path.isfile(path):
            os.unlink(path)
    except OSError as exc:
        raise OutputError(f"cannot remove {path}: {_reason(exc)}") from None


def _write_through(path: str, blob: bytes, flags: int) -> None:
    """Write into an existing device, pipe or descriptor path without replacing it."""
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            raise OutputError(f"cannot write {path}: it is a named pipe and nothing is reading from it") from None
        raise OutputError(f"cannot write {path}: {_reason(exc)}") from None
    try:
        if flags & os.O_NONBLOCK:
            os.set_blocking(fd, True)
        view = memoryview(blob)
        while view:
            view = view[os.write(fd, view):]
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {_reason(exc)}") from None
    finally:
        os.close(fd)


LOCK_FILE = ".lock"  # in the folder a FolderLock locks


class FolderLock:
    """An exclusive lock on a folder a process owns (a run directory), held until :meth:`release` or exit.

    The lock is an ``flock`` on ``FOLDER/.lock``: the kernel drops it when the process dies, so a killed run never
    leaves a stale lock behind, and a second process asking for it is refused at once. A forked child (a data
    loader's worker) closes its copy at once: an flock belongs to every process holding the file open, so workers
    outliving a killed run would otherwise keep its folder locked.
    """

    held: "weakref.WeakSet[FolderLock]" = weakref.WeakSet()

    def __init__(self, folder: str, what: str = "folder"):
        self.path = os.path.join(folder, LOCK_FILE)
        self.fd = None
        if fcntl is None:  # pragma: no cover
            return
        for attempt in range(LOCK_TRIES):
            self.fd = _open_lock_file(self.path, what, folder)
            if _locked_in_place(self.fd, self.path):
                break
            os.close(self.fd)
            self.fd = None
            if attempt == LOCK_TRIES - 1:
                raise OutputError(f"{what} {folder} is in use by another process (it holds {self.path}); wait for it "
                                  "to finish or stop it first")
            time.sleep(LOCK_PAUSE)
        try:
            os.ftruncate(self.fd, 0)
            os.write(self.fd, f"{os.getpid()}\n".encode())
        except OSError as exc:
            self.release()
            raise OutputError(f"cannot lock {what} {folder}: {self.path}: {_reason(exc)}") from None
        FolderLock.held.add(self)

    def release(self, remove: bool = False) -> None:
        """Unlock; ``remove`` also deletes the lock file, while still holding it (a process that opened the file
        meanwhile finds, once it has its lock, that the file is no longer in place, and opens the new one)."""
        if self.fd is not None:
            if remove:
                try:
                    os.unlink(self.path)
                except OSError:
                    pass
            os.close(self.fd)
            self.fd = None

    @classmethod
    def _forget_in_child(cls) -> None:
        for lock in list(cls.held):
            lock.release()  # the child's descriptor only: the parent keeps its lock

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


# A lock is asked for a few times, LOCK_PAUSE apart, before a folder is called in use: is_locked's shared lock
# holds it for an instant, and a lock file removed under a process that opened it is opened again
LOCK_TRIES, LOCK_PAUSE = 5, 0.01


def _locked_in_place(fd: int, path: str) -> bool:
    """Take the exclusive lock on the open lock file; whether it is held and ``path`` still names that file (a
    refused start removes the lock file it made: a lock on the removed file would lock nothing)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    try:
        now, mine = os.stat(path, follow_symlinks=False), os.fstat(fd)
    except OSError:
        return False
    return (now.st_dev, now.st_ino) == (mine.st_dev, mine.st_ino)


def is_locked(folder: str) -> bool:
    """Whether another process holds ``folder``'s lock (a run training there), asked without making a lock file."""
    path = os.path.join(folder, LOCK_FILE)
    if fcntl is None or not os.path.isfile(path) or os.path.islink(path):
        return False
    try:
        fd = os.open(path, os.O_RDONLY | _NONBLOCK | _NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # refused where a process holds its exclusive lock
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


def _open_lock_file(path: str, what: str, folder: str) -> int:
    """The lock file, opened for writing only if it is a regular file of its own: a symbolic link (to a file
    elsewhere, which the pid would overwrite), a named pipe (which would block) or anything else in its place is
    refused, never followed."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | _NONBLOCK | _NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP or os.path.islink(path):
            raise OutputError(f"cannot lock {what} {folder}: {path} is a symbolic link; resdsl writes its lock "
                              "file itself: remove the link") from None
        raise OutputError(f"cannot lock {what} {folder}: {path}: {_reason(exc)}") from None
    kind = file_kind(os.fstat(fd).st_mode)
    if kind is not None:
        os.close(fd)
        raise OutputError(f"cannot lock {what} {folder}: {path} is {kind}, not a regular file; resdsl writes its "
                          "lock file itself: remove it")
    if _NONBLOCK:
        os.set_blocking(fd, True)
    return fd


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=FolderLock._forget_in_child)
