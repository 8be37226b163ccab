"""Ray's local storage replaces each file whole: a writer killed mid-file leaves the old version."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.fs as pafs
from sweep.engine.storage import PARTIAL, filesystem_for

_WRITER = textwrap.dedent(
    """
    import sys, time
    import pyarrow.fs as pafs
    from sweep.engine.storage import filesystem_for
    target, which = sys.argv[1], sys.argv[2]
    fs = filesystem_for(target) if which == "atomic" else pafs.LocalFileSystem()
    with fs.open_output_stream(target) as out:
        out.write(b"new" * 100_000)
        out.flush()
        print("half", flush=True)
        time.sleep(60)  # killed here, half-way through the file
        out.write(b"new" * 100_000)
    """
)


def _kill_mid_write(target: Path, which: str) -> None:
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(target), which], stdout=subprocess.PIPE, text=True,
                              cwd=Path(__file__).resolve().parents[1])  # fmt: skip
    try:
        assert writer.stdout.readline().strip() == "half"
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=30)


def test_a_writer_killed_mid_file_tears_the_local_filesystems_copy_and_not_the_sweeps(tmp_path):
    old = b'{"trial_data": []}'
    for which in ("local", "atomic"):
        target = tmp_path / which / "experiment_state-x.json"
        target.parent.mkdir()
        target.write_bytes(old)
        _kill_mid_write(target, which)
        if which == "local":  # the reference: what Tune's copy into a local folder does today
            assert target.read_bytes() == b"new" * 100_000, "the local filesystem writes in place"
        else:
            assert target.read_bytes() == old
            (partial,) = [p.name for p in target.parent.iterdir() if p != target]
            assert partial.startswith(f".{target.name}{PARTIAL}")


def test_a_copy_through_the_sweeps_filesystem_is_the_same_files(tmp_path):
    source = tmp_path / "staging"
    (source / "sub").mkdir(parents=True)
    files = {"experiment_state-1.json": os.urandom(3 << 20), "sub/params.pkl": b"\x80\x05N."}
    for name, data in files.items():
        (source / name).write_bytes(data)
    fs = filesystem_for(str(tmp_path))
    for _ in range(2):  # the second copy replaces every file
        pafs.copy_files(str(source), str(tmp_path / "storage"), destination_filesystem=fs)
    assert {str(p.relative_to(tmp_path / "storage")): p.read_bytes()
            for p in (tmp_path / "storage").rglob("*") if p.is_file()} == files  # fmt: skip
    fs.copy_file(str(tmp_path / "storage/sub/params.pkl"), str(tmp_path / "copied.pkl"))
    assert (tmp_path / "copied.pkl").read_bytes() == files["sub/params.pkl"]
    assert {i.base_name for i in fs.get_file_info(pafs.FileSelector(str(tmp_path / "storage"), recursive=True))} == {
        "experiment_state-1.json", "sub", "params.pkl"}  # fmt: skip


def test_trials_receive_the_filesystem_pickled_and_a_remote_storage_keeps_its_own():
    fs = filesystem_for("/some/folder")
    again = pickle.loads(pickle.dumps(fs))
    assert again == fs and again.type_name == "py::atomic-local"
    assert filesystem_for("s3://bucket/sweeps") is None
