"""Files and folders that are never half-written, and clear errors when a disk fails.

A crash (power loss, `SIGKILL`, preemption) in the middle of a write must
leave either the previous complete file or the new complete one. The recipe
is the usual one: write under a temporary name in the same directory, flush
the data to disk (`fsync`), rename it over the final name (`os.replace`,
atomic within one file system), then flush the directory so that the rename
itself survives a power loss.
"""

import errno
import json
import os
import shutil
import uuid

TEMPORARY_PREFIX = ".tmp-"

_CAUSES = {
    errno.ENOSPC: "no space is left on the device",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission is denied",
    errno.EPERM: "the operation is not permitted",
    errno.ENOENT: "the directory does not exist (deleted, or a disk not mounted?)",
}


def temporary_name(path):
    """A fresh hidden name beside `path`, for writing before the rename."""
    directory, name = os.path.split(os.path.abspath(path))
    return os.path.join(directory, f"{TEMPORARY_PREFIX}{uuid.uuid4().hex[:12]}-{name}")


def fsync_path(path):
    """Flushes a file, or a directory entry, to disk."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) if os.path.isdir(path) else os.O_RDONLY
    descriptor = os.open(path, flags)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def fsync_tree(directory):
    """Flushes every file under `directory`, then the directories themselves."""
    for root, _, files in os.walk(directory):
        for name in files:
            fsync_path(os.path.join(root, name))
        fsync_path(root)


def atomic_write(path, write):
    """Calls `write(temporary_path)`, then moves the file onto `path`.

    The temporary file lives in the same directory (so `os.replace` is an
    atomic rename) and is flushed to disk first: `path` is always either
    the previous complete file or the new complete file, never a partial
    one. The temporary file is removed if writing fails.

    Example:

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "note.txt")
    >>> atomic_write(path, lambda tmp: open(tmp, "w").write("done"))
    >>> open(path).read()
    'done'
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    # A fresh name (not mkstemp's file) keeps the default file permissions.
    temporary = temporary_name(path)
    try:
        write(temporary)
        fsync_path(temporary)
        os.replace(temporary, path)
        fsync_path(directory)
    except BaseException:
        remove_quietly(temporary)
        raise


def write_json(path, value):
    """Writes `value` to `path` as JSON, atomically (`atomic_write`: a temporary
    file of its own, so that processes writing at once never share one)."""

    def write(temporary):
        with open(temporary, "w") as file:
            json.dump(value, file, indent=1, sort_keys=True)

    atomic_write(path, write)


def atomic_directory(path, write):
    """Calls `write(temporary_directory)`, then renames the directory to `path`.

    `path` must not exist yet. The files are flushed before the rename, so
    `path` either does not exist or holds everything `write` wrote.
    """
    temporary = temporary_name(path)
    os.mkdir(temporary)
    try:
        write(temporary)
        fsync_tree(temporary)
        os.rename(temporary, path)
        fsync_path(os.path.dirname(os.path.abspath(path)))
    except BaseException:
        remove_quietly(temporary)
        raise


def remove_quietly(path):
    """Removes a file or a directory tree, ignoring what cannot be removed."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            os.remove(path)
        except OSError:
            pass


def remove_temporaries(directory):
    """Removes what interrupted writes left in `directory` (its temporary names)."""
    for name in os.listdir(directory):
        if name.startswith(TEMPORARY_PREFIX):
            remove_quietly(os.path.join(directory, name))


def storage_error(error, path, action, remedy):
    """An `OSError` whose first line names `path`, the cause and the remedy.

    Args:
        error: The `OSError` raised by the file system.
        path: The file or directory that was being written.
        action: What was being done, e.g. `"StepBackup could not write its backup"`.
        remedy: What to do, e.g. `"The last complete backup ... is kept."`.
    """
    cause = _CAUSES.get(error.errno, error.strerror or str(error))
    code = errno.errorcode.get(error.errno, "")
    message = f"{action} to {os.fspath(path)!r}: {cause}{f' ({code})' if code else ''}. {remedy}"
    return type(error)(error.errno, message) if error.errno else OSError(message)
