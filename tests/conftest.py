"""
Shared fixtures: small real datasets made by the real prepare.py from two collections of the music21 corpus
(~300 tunes), tiny models trained on them by the real train.py, and the script runner. Plain helper functions are
in helpers.py (tests import them from there; pytest.ini puts tests/ and the repository on the import path).
"""
from pathlib import Path

import pytest

from helpers import FIXTURE_INPUTS, ONE_THREAD, TINY_BLOCK_SIZE, corpus_file, run_script as _run


@pytest.fixture(scope="session")
def run_script():
    """run_script(['prepare.py', '--out_dir', d], check=True) -> CompletedProcess (stdout/stderr as text)."""
    return _run


def _prepare(out, *extra):
    args = ["prepare.py", "--out_dir", out, "--split_fractions", "0.8,0.1,0.1", "--cache_dir", "", "--workers", "2"]
    for rel in FIXTURE_INPUTS:
        args += ["--input", corpus_file(rel)]
    _run(args + list(extra))
    return Path(out)


@pytest.fixture(scope="session")
def char_dataset(tmp_path_factory):
    """A char-level dataset folder (train ~70k tokens, val/test ~30 tunes each)."""
    return _prepare(tmp_path_factory.mktemp("data") / "char")


@pytest.fixture(scope="session")
def bpe_dataset(tmp_path_factory):
    """A BPE dataset folder (vocabulary 512) of the same tunes as char_dataset."""
    return _prepare(tmp_path_factory.mktemp("data") / "bpe", "--tokenizer", "bpe", "--vocab_size", "512")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """tiny_run(data_dir, model_type) -> the run folder of a tiny model trained by the real train.py on data_dir,
    trained once per test session, dataset and model type."""
    def train(data_dir, model_type):
        out = tmp_path_factory.getbasetemp() / f"eval_run_{Path(data_dir).name}_{model_type}"
        if not (out / "ckpt.pt").exists():
            args = ["train.py", f"--data_dir={data_dir}", f"--out_dir={out}", f"--model_type={model_type}",
                    "--max_iters=100", "--batch_size=16", f"--block_size={TINY_BLOCK_SIZE}", "--n_layer=1",
                    "--n_embd=64", "--learning_rate=3e-3", "--warmup_iters=10", "--device=cpu",
                    "--eval_interval=0", "--compile=False", "--dtype=float32"]
            if model_type == "gpt":
                args.append("--n_head=2")
            _run(args, env=ONE_THREAD)
        return out
    return train
