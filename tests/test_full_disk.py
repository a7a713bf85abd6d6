"""A full disk, for real: a small tmpfs mounted for the test (CI runs as root). What a user relies on: one line
saying the disk is full and where, the last good files kept, no partial file left behind."""
import contextlib
import os
import subprocess
import tempfile

import pytest
import torch

from helpers import many_tunes, run_script
from music_scaling_laws.errors import UserError
from music_scaling_laws.training.checkpoint import read_checkpoint, save_atomic


@contextlib.contextmanager
def small_disk(size):
    """A folder on a tmpfs of `size` (e.g. '256k'): writing more fails with ENOSPC, as on a full disk."""
    folder = tempfile.mkdtemp(prefix="msl-small-disk-")
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", folder], capture_output=True)
    if mount.returncode != 0:
        os.rmdir(folder)
        pytest.skip(f"cannot mount a tmpfs here (root needed): {mount.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", folder], check=True)
        os.rmdir(folder)


def test_a_checkpoint_onto_a_full_disk_keeps_the_last_good_one_and_says_so():
    with small_disk("256k") as disk:
        path = os.path.join(disk, "ckpt.pt")
        small = {"model_type": "gpt", "model_args": {}, "model": {"w": torch.arange(1000.0)}, "config": {}}
        save_atomic(small, path)
        big = {**small, "model": {"w": torch.zeros(200_000)}}  # 800 kB: more than the disk holds
        with pytest.raises(UserError) as e:
            save_atomic(big, path)
        message = str(e.value)
        assert "\n" not in message and "disk" in message and "full" in message and disk in message
        assert "keeps the last good state" in message
        assert sorted(os.listdir(disk)) == ["ckpt.pt"], "the partial ckpt.pt.tmp is removed"
        assert torch.equal(read_checkpoint(path)["model"]["w"], torch.arange(1000.0))
        os.remove(path)
        with pytest.raises(UserError, match="nothing was written to"):  # the first checkpoint: nothing to keep
            save_atomic(big, path)
        assert os.listdir(disk) == []


def test_prepare_on_a_full_disk_says_so_in_one_line_and_leaves_nothing(tmp_path):
    src = tmp_path / "tunes.abc"
    src.write_text("\n".join(many_tunes(4000)))  # ~0.6 MB of ABC: its spool outgrows the disk
    with small_disk("256k") as disk:
        out = os.path.join(disk, "data")
        proc = run_script(["prepare.py", "--input", src, "--out_dir", out, "--cache_dir", "", "--workers", "1"],
                          check=False)
        assert proc.returncode == 1
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert lines[0].startswith("error: the disk is full") and disk in lines[0]
        assert f"{out} is unchanged" in lines[0]
        assert not os.path.exists(out)
        # nothing of the run is left but its (empty) lock file: no temporary folder, no spool
        assert os.listdir(disk) == [".data.prepare.lock"]


def test_train_on_a_disk_that_holds_one_checkpoint_stops_in_one_line_keeping_it(char_dataset):
    """The issue's case: the disk holds ckpt.pt but not ckpt.pt.tmp beside it, so the second checkpoint fails (torch
    said "RuntimeError: [enforce fail at inline_container.cc:672] . unexpected pos ..." and left the .tmp)."""
    with small_disk("600k") as disk:  # a checkpoint of this model and its optimizer is ~370 kB
        out = os.path.join(disk, "run")
        proc = run_script(["train.py", f"--data_dir={char_dataset}", f"--out_dir={out}", "--n_layer=2", "--n_head=2",
                           "--n_embd=32", "--block_size=32", "--batch_size=8", "--device=cpu", "--compile=False",
                           "--dtype=float32", "--eval_interval=10", "--eval_iters=2", "--ckpt_interval=5",
                           "--max_iters=20"], check=False, env={"OMP_NUM_THREADS": "1"})
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert proc.stderr.strip().splitlines() == [
            f"error: the disk holding {out} is full: {out}/ckpt.pt keeps the last good state and the partial "
            f"ckpt.pt.tmp is removed; free space there and resume (--init_from=resume)"]
        assert not os.path.exists(os.path.join(out, "ckpt.pt.tmp"))
        assert read_checkpoint(os.path.join(out, "ckpt.pt"))["iter_num"] == 5


def test_any_other_write_of_train_py_on_a_full_disk_is_one_line(char_dataset, tmp_path, monkeypatch):
    """Besides checkpoints (save_atomic), train.py writes log.jsonl and results.json: a full disk there is the same
    one line, not a traceback (the write is made to fail where it happens, at the end of the run)."""
    import errno
    import train
    from helpers import run as train_tiny

    def full(results, out_dir, *args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.path.join(out_dir, "results.json"))
    monkeypatch.setattr(train, "write_results", full)
    with pytest.raises(SystemExit) as stop:
        train_tiny(char_dataset, tmp_path / "run", "--max_iters=2", "--eval_interval=0")
    message = str(stop.value.code)
    assert message.startswith("error: the disk is full (No space left on device) writing ") and "\n" not in message
    assert "results.json" in message and "--init_from=resume" in message
    assert (tmp_path / "run" / "ckpt.pt").exists()  # the final checkpoint came before the failed write
