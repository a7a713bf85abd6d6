"""sample.py: incremental decoding equals full recomputation (GPT past block_size, LSTM), sampling filters,
complete tunes with recorded header completion, conversions recorded per sample."""
import json
import os
import sys

import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from abc_text import parse_header  # noqa: E402
from checkpoint import load_run  # noqa: E402
import sample  # noqa: E402
from sample import Decoder, generate, sample_next_token  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from conftest import ONE_THREAD, TINY_BLOCK_SIZE as BLOCK_SIZE, tiny_run  # noqa: E402


@pytest.fixture(scope="module", params=["gpt", "lstm"])
def run(request, run_script, tmp_path_factory, char_dataset):
    torch.set_num_threads(1)
    return tiny_run(run_script, tmp_path_factory, char_dataset, request.param)


def real_tune_ids(tokenizer, data_dir, min_len):
    """Token ids of the first real test tune with at least min_len tokens (varied, realistic input)."""
    meta = json.loads((data_dir / "meta.json").read_text())
    ids = np.fromfile(data_dir / "test.bin", dtype=meta["dtype"])
    start = 0
    for end in np.flatnonzero(ids == tokenizer.eot_id):
        if end - start >= min_len:
            return ids[start:end].tolist()
        start = end + 1
    pytest.skip("no test tune long enough")


def test_cached_logits_equal_full_recomputation_past_block_size(run, char_dataset):
    model, _, tokenizer, _ = load_run(str(run), "cpu")
    tokens = real_tune_ids(tokenizer, char_dataset, 3 * BLOCK_SIZE)
    cached, full = Decoder(model, "cpu", use_cache=True), Decoder(model, "cpu", use_cache=False)
    with torch.no_grad():
        a, b = cached.prefill([tokenizer.eot_id]), full.prefill([tokenizer.eot_id])
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
        for token in tokens:
            a, b = cached.append(token), full.append(token)
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    if model.model_type == "gpt":  # the window slid (cache re-filled) several times on the way
        assert cached.reprefills >= 2 and cached.start == full.start > 0


def test_greedy_with_cache_equals_greedy_without(run):
    model, _, tokenizer, _ = load_run(str(run), "cpu")
    n = 3 * BLOCK_SIZE  # well past block_size: the GPT cache must slide
    prompt = [tokenizer.eot_id] + tokenizer.encode("X:1\nM:6/8\nL:1/8\nK:D\nA|")
    with torch.no_grad():
        greedy_cached, _ = generate(model, prompt, n, temperature=0, use_cache=True)
        greedy_full, _ = generate(model, prompt, n, temperature=0, use_cache=False)
    assert len(greedy_cached) == n
    assert greedy_cached == greedy_full
    # sampled output explores many more tokens than a tiny model's greedy loop
    sampled = []
    for use_cache in (True, False):
        generator = torch.Generator().manual_seed(7)
        sampled.append(generate(model, prompt, n, temperature=1.0, top_k=20, top_p=0.95,
                                generator=generator, use_cache=use_cache)[0])
    assert len(set(sampled[0])) >= 5
    assert sampled[0] == sampled[1]


def test_generation_stops_at_end_of_tune():
    class CountingModel(torch.nn.Module):
        """Tiny stand-in whose next token is always (last token + 1) mod 5; token 3 plays EOT."""
        model_type = "lstm"

        def __init__(self):
            super().__init__()
            self.config = type("C", (), {"block_size": 8})()

        def forward(self, idx):
            return torch.nn.functional.one_hot((idx + 1) % 5, 5).float() * 10, None

        def init_state(self, batch_size, device):
            return None

        def step(self, idx, state):
            return self.forward(idx)[0], state

    new, ended = generate(CountingModel(), [0], 50, eot_id=3, temperature=0)
    assert (new, ended) == ([1, 2], True)
    new, ended = generate(CountingModel(), [0], 2, eot_id=3, temperature=0)
    assert (new, ended) == ([1, 2], False)


def test_sampling_filters():
    logits = torch.tensor([0.0, 3.0, 2.0, 1.0, -1.0])
    assert sample_next_token(logits, 0, 0, 1.0, None) == 1
    g = torch.Generator().manual_seed(0)
    assert {sample_next_token(logits, 1.0, 1, 1.0, g) for _ in range(50)} == {1}
    assert {sample_next_token(logits, 1.0, 2, 1.0, g) for _ in range(200)} == {1, 2}
    # p(1) = 0.64, p(2) = 0.24: the nucleus of 0.8 is {1, 2}, of 0.5 only {1}
    assert {sample_next_token(logits, 1.0, 0, 0.8, g) for _ in range(200)} == {1, 2}
    assert {sample_next_token(logits, 1.0, 0, 0.5, g) for _ in range(50)} == {1}
    assert len({sample_next_token(logits, 1.0, 0, 1.0, g) for _ in range(500)}) == 5


def test_cli_writes_complete_tunes_and_records_every_conversion(tmp_path, tmp_path_factory, run_script, char_dataset):
    run = tiny_run(run_script, tmp_path_factory, char_dataset, "gpt")
    out = tmp_path / "samples"
    # a prompt that is music only: the file must gain all four headers, and the record must say how
    proc = run_script(["sample.py", "--run", run, "--out", out, "--num_samples", "3", "--max_new_tokens", "48",
                       "--prompt", "CDEF GABc|", "--midi", "--wav", "--svg", "--device", "cpu"], env=ONE_THREAD)
    assert "tokens/s" in proc.stdout
    records = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert [os.path.basename(r["file"]) for r in records] == ["sample_001.abc", "sample_002.abc", "sample_003.abc"]
    for r in records:
        text = open(r["file"]).read()
        assert text.startswith("X:1\nM:4/4\nL:1/8\nK:C\nCDEF GABc|")
        # X:1 opens every training tune, so the sampler writes it (tune_opening); the rest was added after
        assert r["tune_opening"] == "X:1\n" and r["headers_added"] == ["M", "L", "K"]
        assert set(parse_header(text)) >= {"X", "M", "L", "K"}
        assert r["prompt"] == "CDEF GABc|"
        assert r["tokens"] < 48 if r["ended_with_eot"] else r["tokens"] == 48
        # every conversion is recorded, failed or not, and an ok flag means the file is there
        for kind in ("midi", "wav", "svg"):
            assert isinstance(r[f"{kind}_ok"], bool)
            if r[f"{kind}_ok"]:
                assert os.path.getsize(r[kind]) > 0
    # the prompt alone is music, so abc2midi finds its notes and the audio is not silent
    assert all(r["midi_notes"] >= 8 for r in records)
    assert all(r["wav_ok"] and r["wav_peak"] > 0.001 for r in records)


def test_cli_header_prompt_is_kept_and_bad_input_is_one_line(tmp_path, tmp_path_factory, run_script, char_dataset):
    run = tiny_run(run_script, tmp_path_factory, char_dataset, "lstm")
    prompt_file = tmp_path / "prompt.abc"
    prompt_file.write_text("X:7\nM:6/8\nL:1/8\nK:G\n")
    out = tmp_path / "s"
    run_script(["sample.py", "--run", run, "--out", out, "--num_samples", "1", "--max_new_tokens", "16",
                "--prompt_file", prompt_file, "--seed", "3"], env=ONE_THREAD)
    record = json.loads((out / "samples.jsonl").read_text())
    assert record["headers_added"] == []
    assert (out / "sample_001.abc").read_text().startswith("X:7\nM:6/8\nL:1/8\nK:G\n")

    for bad in (["--run", str(tmp_path / "missing")], ["--run", str(run), "--top_p", "0"],
                ["--run", str(run), "--prompt_file", str(tmp_path / "missing.abc")]):
        with pytest.raises(SystemExit) as exit_info:  # configurator.fail prints "error: ..." and exits 1
            sample.main(["--out", str(tmp_path / "x"), *bad])
        assert str(exit_info.value.code).startswith("error:") and "\n" not in str(exit_info.value.code)
