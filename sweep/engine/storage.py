"""Ray's storage on a local disk, written so that a file is either its old or its new version.

Tune saves its experiment state into a staging folder on the driver and copies it to the storage
path from a background thread (``pyarrow.fs.copy_files``, which writes each file in place). A
driver killed during that copy (``kill -9``, a lost head node, an OOM kill) leaves a half-written
``experiment_state-*.json`` or searcher pickle behind; ``--resume`` then has nothing whole to read
and Tune would start over (the resume checks refuse it instead). A CI run of the every-phase kill
test on a loaded 2-core machine met it: the resume after the kill at a trial's result was refused
for an unreadable state; the test passed in the runs before and after.

:func:`filesystem_for` gives Tune, for a local storage path, a ``pyarrow`` filesystem (through
pyarrow's public ``PyFileSystem``/``FileSystemHandler``) that is the local one except that every
file is written to a hidden temporary name beside its target and renamed over it when closed
(``os.replace`` is atomic on POSIX). Checkpoints that trials upload get the same guarantee. A
remote storage (``s3://``, ``gs://``) is left to its own semantics: object stores publish an
object only once its upload completes.

A kill leaves at most a hidden ``.<name>.partial-<pid>`` file beside its target, which no reader
of Tune's state matches (it is not deleted at the next start: a trial that outlived its driver on a
shared cluster may still be writing it).
"""

from __future__ import annotations

import os
from typing import Any

import pyarrow
import pyarrow.fs as pafs

PARTIAL = ".partial-"  # hidden temporary files: "." + name + PARTIAL + pid


class _ReplaceOnClose:
    """A binary file object writing to a temporary name, renamed over ``target`` when closed."""

    def __init__(self, target: str) -> None:
        head, tail = os.path.split(target)
        self.target = target
        self.temporary = os.path.join(head, f".{tail}{PARTIAL}{os.getpid()}")
        os.makedirs(head or ".", exist_ok=True)  # a copy may write into folders it has not made yet
        self._file = open(self.temporary, "wb")  # noqa: SIM115 - closed by close()
        self.closed = False

    def write(self, data: Any) -> int:
        return self._file.write(data)

    def flush(self) -> None:
        self._file.flush()

    def tell(self) -> int:
        return self._file.tell()

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._file.close()
        os.replace(self.temporary, self.target)


class AtomicLocalHandler(pafs.FileSystemHandler):
    """The local filesystem, each written file replacing its target only once complete."""

    def __init__(self) -> None:
        self._local = pafs.LocalFileSystem()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AtomicLocalHandler)

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __reduce__(self) -> tuple[Any, ...]:  # trials receive the filesystem pickled
        return AtomicLocalHandler, ()

    def get_type_name(self) -> str:
        return "atomic-local"

    def normalize_path(self, path: str) -> str:
        return self._local.normalize_path(path)

    def get_file_info(self, paths: list[str]) -> list[pafs.FileInfo]:
        return self._local.get_file_info(paths)

    def get_file_info_selector(self, selector: pafs.FileSelector) -> list[pafs.FileInfo]:
        return self._local.get_file_info(selector)

    def create_dir(self, path: str, recursive: bool) -> None:
        self._local.create_dir(path, recursive=recursive)

    def delete_dir(self, path: str) -> None:
        self._local.delete_dir(path)

    def delete_dir_contents(self, path: str, missing_dir_ok: bool = False) -> None:
        self._local.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self) -> None:
        raise OSError("refusing to delete the contents of the root folder")

    def delete_file(self, path: str) -> None:
        self._local.delete_file(path)

    def move(self, src: str, dest: str) -> None:
        self._local.move(src, dest)

    def copy_file(self, src: str, dest: str) -> None:
        with self._local.open_input_stream(src) as source, self.open_output_stream(dest, None) as sink:
            while chunk := source.read(1 << 20):
                sink.write(chunk)

    def open_input_stream(self, path: str) -> pyarrow.NativeFile:
        return self._local.open_input_stream(path)

    def open_input_file(self, path: str) -> pyarrow.NativeFile:
        return self._local.open_input_file(path)

    def open_output_stream(self, path: str, metadata: Any) -> pyarrow.NativeFile:
        return pyarrow.PythonFile(_ReplaceOnClose(path), mode="w")

    def open_append_stream(self, path: str, metadata: Any) -> pyarrow.NativeFile:
        return self._local.open_append_stream(path)


def filesystem_for(storage_path: str) -> pafs.FileSystem | None:
    """The filesystem Tune should write ``storage_path`` with: the atomic local one for a local
    path, None (Tune's own choice) for a URI."""
    if "://" in storage_path:
        return None
    return pafs.PyFileSystem(AtomicLocalHandler())

