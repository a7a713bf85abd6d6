"""sample.py: batched incremental decoding equals full recomputation (GPT past block_size, LSTM), a tune is the same
whatever the batch and the same as one-at-a-time multinomial sampling gave, rows stop at their own end of tune,
sampling filters, complete tunes with recorded header completion, conversions recorded per sample."""
import json
import os
import time

import numpy as np
import pytest
import torch

import sample
from music_scaling_laws.data.abc_text import parse_header
from model import load_run
from helpers import ONE_THREAD, TINY_BLOCK_SIZE as BLOCK_SIZE
from sample import Decoder, generate, pick_tokens


@pytest.fixture(scope="module", params=["gpt", "lstm"])
def run(request, tiny_run, char_dataset):
    torch.set_num_threads(1)
    return tiny_run(char_dataset, request.param)


def real_tunes(tokenizer, data_dir, min_len, count):
    """Token ids of the first count real test tunes with at least min_len tokens (varied, realistic input)."""
    meta = json.loads((data_dir / "meta.json").read_text())
    ids = np.fromfile(data_dir / "test.bin", dtype=meta["dtype"])
    tunes, start = [], 0
    for end in np.flatnonzero(ids == tokenizer.eot_id):
        if end - start >= min_len:
            tunes.append(ids[start:end].tolist())
        start = end + 1
    if len(tunes) < count:
        pytest.skip("not enough long test tunes")
    return tunes[:count]


def prompts_of_different_lengths(tokenizer):
    opening = [tokenizer.eot_id] + tokenizer.encode("X:1\nM:6/8\nL:1/8\nK:D\n")
    # the last one is longer than block_size: its first window already starts inside the prompt
    return [[tokenizer.eot_id], opening, opening + tokenizer.encode("A|" * BLOCK_SIZE)]


def test_batched_cached_logits_equal_full_recomputation_past_block_size(run, char_dataset):
    model, _, tokenizer, _ = load_run(str(run), "cpu")
    tunes = real_tunes(tokenizer, char_dataset, 4 * BLOCK_SIZE, 3)
    cached, full = Decoder(model, 3, 4 * BLOCK_SIZE, "cpu"), Decoder(model, 3, 4 * BLOCK_SIZE, "cpu", use_cache=False)
    prompts = [[tokenizer.eot_id] + tune[:n] for tune, n in zip(tunes, (0, 5, BLOCK_SIZE + 3))]  # rows out of step
    with torch.no_grad():
        for decoder in (cached, full):
            for row, ids in enumerate(prompts):
                decoder.put(row, ids)
        for step in range(2 * BLOCK_SIZE):
            torch.testing.assert_close(cached.logits(), full.logits(), atol=1e-4, rtol=1e-4)
            tokens = torch.tensor([tune[len(ids) - 1 + step] for tune, ids in zip(tunes, prompts)])
            cached.append(tokens)
            full.append(tokens)
            if step == BLOCK_SIZE:  # a finished row leaves, the others go on where they were
                for decoder in (cached, full):
                    decoder.keep_rows([2, 0])
                tunes, prompts = [tunes[2], tunes[0]], [prompts[2], prompts[0]]
    if model.model_type == "gpt":  # the rows' windows slid (caches re-filled) on the way, each at its own time
        assert cached.reprefills >= 4 and cached.start == full.start and len(set(cached.start)) == len(cached.start)


def test_greedy_with_cache_equals_greedy_without_batched_or_not(run):
    model, _, tokenizer, _ = load_run(str(run), "cpu")
    prompts = prompts_of_different_lengths(tokenizer)
    n = 3 * BLOCK_SIZE  # well past block_size: the GPT cache must slide
    greedy = {}
    for use_cache in (True, False):
        for batch_size in (0, 1, 2):
            out = generate(model, prompts, n, temperature=0, use_cache=use_cache, batch_size=batch_size)
            greedy[use_cache, batch_size] = sorted(out)
    first = greedy[True, 0]
    assert [len(new) for _, new, _, _ in first] == [n] * 3
    for out in greedy.values():
        assert [(i, new, ended) for i, new, ended, _ in out] == [(i, new, ended) for i, new, ended, _ in first]


def reference_tune(model, prompt, n, eot_id, seed, temperature, top_k, top_p):
    """One tune the way sample.py drew before batching: full recomputation, torch.multinomial on the CPU."""
    generator, tokens, new = torch.Generator().manual_seed(seed), list(prompt), []
    block_size, gpt = model.config.block_size, model.model_type == "gpt"
    start = max(0, len(tokens) - block_size) if gpt else 0
    while len(new) < n:
        if gpt and len(tokens) - start > block_size:
            start = len(tokens) - block_size // 2
        logits = model(torch.tensor([tokens[start:]]))[0][0, -1] / temperature
        if top_k:
            logits = logits.masked_fill(logits < torch.topk(logits, top_k).values[-1], float("-inf"))
        probs = torch.softmax(logits, dim=-1)
        sorted_probs, order = torch.sort(probs, descending=True)
        probs = probs.scatter(0, order, sorted_probs.masked_fill(torch.cumsum(sorted_probs, 0) - sorted_probs >= top_p, 0))
        token = int(torch.multinomial(probs / probs.sum(), 1, generator=generator))
        if token == eot_id:
            return new, True
        new.append(token)
        tokens.append(token)
    return new, False


def test_a_tune_is_the_same_whatever_the_batch_and_as_before_batching(run):
    model, _, tokenizer, _ = load_run(str(run), "cpu")
    prompts = prompts_of_different_lengths(tokenizer) * 2
    seeds = [11 + i for i in range(len(prompts))]
    n = 2 * BLOCK_SIZE
    tunes = {}
    for use_cache, batch_size in ((True, 0), (True, 1), (True, 4), (False, 3)):  # 4 and 3 < 6: rows are reused
        out = generate(model, prompts, n, eot_id=tokenizer.eot_id, temperature=0.9, top_k=20, top_p=0.95,
                       seeds=seeds, use_cache=use_cache, batch_size=batch_size)
        tunes[use_cache, batch_size] = {i: (new, ended) for i, new, ended, _ in out}
    first = tunes[True, 0]
    assert sorted(first) == list(range(len(prompts))) and all(t == first for t in tunes.values())
    assert len({len(new) for new, _ in first.values()}) > 1  # rows ended at their own times
    assert len({tuple(new) for new, _ in first.values()}) == len(prompts)  # one seed each
    with torch.no_grad():
        for i in (0, 2, 5):
            assert reference_tune(model, prompts[i], n, tokenizer.eot_id, seeds[i], 0.9, 20, 0.95) == first[i]


class CountingModel(torch.nn.Module):
    """Tiny stand-in whose next token is always (last token + 1) mod 5; token 3 plays EOT."""
    model_type = "lstm"

    def __init__(self):
        super().__init__()
        self.config = type("C", (), {"block_size": 8, "vocab_size": 5})()

    def forward(self, idx):
        return torch.nn.functional.one_hot((idx + 1) % 5, 5).float() * 10, None

    def init_state(self, batch_size, device):
        return None

    def step(self, idx, state):
        return self.forward(idx)[0], state

    def reset_rows(self, state, rows, idx):
        pass

    def select_rows(self, state, rows):
        return None


@pytest.mark.parametrize("use_cache", [True, False])
def test_each_row_stops_at_its_own_end_of_tune(use_cache):
    def decode(prompts, max_new_tokens, batch_size):
        out = generate(CountingModel(), prompts, max_new_tokens, eot_id=3, temperature=0, use_cache=use_cache,
                       batch_size=batch_size)
        return {i: (new, ended) for i, new, ended, _ in out}
    for batch_size in (0, 1, 2):
        assert decode([[0], [1], [2], [0, 1, 2, 3, 4]], 50, batch_size) == {
            0: ([1, 2], True), 1: ([2], True), 2: ([], True), 3: ([0, 1, 2], True)}
        assert decode([[0], [4]], 2, batch_size) == {0: ([1, 2], False), 1: ([0, 1], False)}
    # each tune's seconds are its share of the decoding time: they add up to at most the wall time
    t0 = time.perf_counter()
    seconds = [s for _, _, _, s in generate(CountingModel(), [[0], [4], [1]], 40, temperature=0, batch_size=2)]
    assert all(s > 0 for s in seconds) and sum(seconds) <= time.perf_counter() - t0


def test_sampling_filters():
    logits = torch.tensor([[0.0, 3.0, 2.0, 1.0, -1.0]]).expand(500, 5)
    noise = torch.empty(500, 5).exponential_(generator=torch.Generator().manual_seed(0))
    picked = lambda *args: set(pick_tokens(logits, *args, noise).tolist())  # noqa: E731
    assert picked(0, 0, 1.0) == {1}
    assert picked(1.0, 1, 1.0) == {1}
    assert picked(1.0, 2, 1.0) == {1, 2}
    # p(1) = 0.64, p(2) = 0.24: the nucleus of 0.8 is {1, 2}, of 0.5 only {1}
    assert picked(1.0, 0, 0.8) == {1, 2}
    assert picked(1.0, 0, 0.5) == {1}
    assert picked(1.0, 0, 1.0) == {0, 1, 2, 3, 4}
    counts = torch.bincount(pick_tokens(logits, 1.0, 0, 1.0, noise), minlength=5) / 500
    torch.testing.assert_close(counts, torch.softmax(logits[0], -1), atol=0.06, rtol=0)


def test_cli_writes_complete_tunes_and_records_every_conversion(tmp_path, tiny_run, run_script, char_dataset):
    run = tiny_run(char_dataset, "gpt")
    out = tmp_path / "samples"
    # a prompt that is music only: the file must gain all four headers, and the record must say how
    proc = run_script(["sample.py", "--run", run, "--out_dir", out, "--num_samples", "3", "--max_new_tokens", "48",
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
        assert r["cuda_graph"] is False  # only CUDA replays a captured step
        # every conversion is recorded, failed or not, and an ok flag means the file is there
        for kind in ("midi", "wav", "svg"):
            assert isinstance(r[f"{kind}_ok"], bool)
            if r[f"{kind}_ok"]:
                assert os.path.getsize(r[kind]) > 0
    # the prompt alone is music, so abc2midi finds its notes and the audio is not silent
    assert all(r["midi_notes"] >= 8 for r in records)
    # audio from every MIDI with notes (abc2midi's errors or not), and not silent
    assert all(r["wav_ok"] and r["wav_peak"] > 0.001 for r in records)


def test_audio_counts_are_honest_and_a_broken_tune_renders_no_minutes_of_audio(tmp_path, capsys):
    """A barely trained model's summary said "MIDI ok 0/10" beside "WAV ok 10/10": its MIDI files had notes, and
    abc2midi reported errors for each. The summary now says so ("MIDI ok" is without abc2midi errors, beside how many
    were written with notes, which is what a WAV is rendered from); a MIDI without notes and a short broken tune
    holding a note for 15 minutes render no WAV, counted as not rendered with the reason in the record."""
    tunes = {"good": "CDEF|GABc|", "error": "CDEF|GA}Bc|", "long": "C1800 D|", "empty": "z4|z4|"}
    cfg = {"midi": True, "wav": True, "svg": False, "tool_timeout": 60.0, "wav_sample_rate": 22050,
           "silence_peak": 1e-3, "max_wav_seconds_per_note": 10.0}
    records = []
    for name, body in tunes.items():
        path = tmp_path / f"{name}.abc"
        path.write_text(f"X:1\nM:4/4\nL:1/4\nK:C\n{body}\n")
        (tmp_path / f"{name}.wav").write_bytes(b"an earlier call's audio")
        record = {"file": str(path)}
        sample.convert(record, str(path), cfg, sample.find_soundfont(""))
        records.append(record)
    good, error, long, empty = records
    assert good["midi_ok"] and good["wav_ok"] and "wav_skipped" not in good
    assert error["midi_notes"] > 0 and not error["midi_ok"] and error["wav_ok"] and "wav_skipped" not in error
    assert long["midi_ok"] and long["wav"] is None and long["wav_skipped"].startswith("too_long: plays 900 s")
    assert empty["midi_notes"] == 0 and empty["wav"] is None and empty["wav_skipped"] == "no_notes"
    assert "long.wav" not in os.listdir(tmp_path) and "empty.wav" not in os.listdir(tmp_path), \
        "no WAV is left beside a tune that was not rendered"
    for r in records:
        r.update(ended_with_eot=True, headers_added=[], svg_ok=False)
    sample.print_summary(records, 0, 0.0, str(tmp_path))
    assert ("MIDI ok 2/4 without abc2midi errors (3/4 written with notes); WAV ok 2/4 (not rendered: 1 no notes, "
            "1 too long)") in capsys.readouterr().out


def test_cli_header_prompt_is_kept_and_bad_input_is_one_line(tmp_path, tiny_run, run_script, char_dataset):
    run = tiny_run(char_dataset, "lstm")
    prompt_file = tmp_path / "prompt.abc"
    prompt_file.write_text("X:7\nM:6/8\nL:1/8\nK:G\n")
    out = tmp_path / "s"
    run_script(["sample.py", "--run", run, "--out_dir", out, "--num_samples", "1", "--max_new_tokens", "16",
                "--prompt_file", prompt_file, "--seed", "3"], env=ONE_THREAD)
    record = json.loads((out / "samples.jsonl").read_text())
    assert record["headers_added"] == []
    assert (out / "sample_001.abc").read_text().startswith("X:7\nM:6/8\nL:1/8\nK:G\n")

    for bad in (["--run", str(tmp_path / "missing")], ["--run", str(run), "--top_p", "0"],
                ["--run", str(run), "--prompt_file", str(tmp_path / "missing.abc")]):
        with pytest.raises(SystemExit) as exit_info:  # configurator.fail prints "error: ..." and exits 1
            sample.main(["--out_dir", str(tmp_path / "x"), *bad])
        assert str(exit_info.value.code).startswith("error:") and "\n" not in str(exit_info.value.code)


def test_cli_gives_the_same_tunes_whatever_the_batch_size(tmp_path, tiny_run, char_dataset):
    run = tiny_run(char_dataset, "gpt")
    common = ["--run", str(run), "--max_new_tokens", "64", "--device", "cpu"]
    texts = {}
    for batch_size in (0, 2, 1):  # all at once, two rows reused, one by one
        records = sample.main([*common, "--out_dir", str(tmp_path / f"b{batch_size}"), "--num_samples", "5", "--seed", "5",
                               "--batch_size", str(batch_size)])
        assert [r["seed"] for r in records] == [5, 6, 7, 8, 9]
        assert records[0]["batch_size"] == (batch_size or 5)
        texts[batch_size] = [open(r["file"]).read() for r in records]
    assert texts[0] == texts[2] == texts[1] and len(set(texts[0])) == 5
    # any one sample regenerated alone from its recorded seed
    alone = sample.main([*common, "--out_dir", str(tmp_path / "alone"), "--num_samples", "1", "--seed", "8"])
    assert open(alone[0]["file"]).read() == texts[0][3]


def test_a_folder_never_mixes_two_calls_tunes(tmp_path, tiny_run, char_dataset):
    """--out_dir holding samples is refused (nothing touched) unless --overwrite=True, which removes exactly the earlier
    call's files (tunes, conversions, samples.jsonl), never anything else, and only once the model has loaded."""
    run = tiny_run(char_dataset, "lstm")
    out = tmp_path / "samples"
    common = ["--run", str(run), "--out_dir", str(out), "--max_new_tokens", "8", "--device", "cpu"]
    sample.main([*common, "--num_samples", "2"])
    # what a longer, rendered call killed half-way leaves, and files of the user's that merely look alike
    leftovers = ["sample_007.abc", "sample_007.mid", "sample_007.wav", "sample_007.svg", "sample_007_page2.svg"]
    foreign = ["notes.txt", "sample_notes.txt", "my_sample_001.abc", "sample_001.abc.bak"]
    for name in leftovers + foreign:
        (out / name).write_text("x")
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def refused(args):
        with pytest.raises(SystemExit) as exit_info:
            sample.main(args)
        message = str(exit_info.value.code)
        assert message.startswith("error:") and "\n" not in message
        return message

    assert "--overwrite=True" in refused([*common, "--num_samples", "1"])
    # a call that fails (here: no checkpoint) removes nothing, even with --overwrite=True
    refused(["--run", str(tmp_path / "no_run"), "--out_dir", str(out), "--overwrite=True"])
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before

    records = sample.main([*common, "--num_samples", "1", "--overwrite=True"])
    assert sorted(p.name for p in out.iterdir()) == sorted(foreign + ["sample_001.abc", "samples.jsonl"])
    assert [os.path.basename(r["file"]) for r in records] == ["sample_001.abc"]
    assert records[0]["run_id"] == json.loads((run / "results.json").read_text())["run_id"]  # which model drew it
    assert len((out / "samples.jsonl").read_text().splitlines()) == 1

    # only samples.jsonl left (its tunes deleted by hand) still counts as an earlier call's output
    (out / "sample_001.abc").unlink()
    refused([*common, "--num_samples", "1"])
    # an --out_dir that is a file, or inside one, is one line and the file stays as it was
    assert "is a file" in refused(["--run", str(run), "--out_dir", str(out / "notes.txt")])
    refused(["--run", str(run), "--out_dir", str(out / "notes.txt" / "sub")])
    assert (out / "notes.txt").read_text() == "x"


def test_unconditional_tunes_start_from_the_end_of_tune_alone_after_tune_aligned_training(
        tmp_path, tiny_run, run_script, char_dataset):
    """A run trained in 'tunes' order (the default) saw every tune start after an EOT, so sample.py invents no
    opening for it; a 'stride' run gets the X:1 line written for it, as before."""
    run = tiny_run(char_dataset, "lstm")
    stride_run = tmp_path / "stride_run"
    stride_run.mkdir()
    ckpt = torch.load(run / "ckpt.pt", weights_only=True)
    assert ckpt["config"]["data_order"] == "tunes"
    ckpt["config"]["data_order"] = "stride"
    torch.save(ckpt, stride_run / "ckpt.pt")
    for folder, opening in [(run, ""), (stride_run, "X:1\n")]:
        out = tmp_path / f"samples_{folder.name}"
        run_script(["sample.py", "--run", folder, "--out_dir", out, "--num_samples", "2", "--max_new_tokens", "16",
                    "--device", "cpu"], env=ONE_THREAD)
        records = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
        assert [r["tune_opening"] for r in records] == [opening, opening]


def test_the_captured_step_gives_exactly_today_s_tunes_for_the_same_seeds(tiny_run, char_dataset, monkeypatch):
    """sample.py's CUDA-graph path (one-token steps over the whole preallocated KV cache, so the shapes never change;
    static input and output buffers replayed; a batch that keeps its idle rows until half are idle, then captures
    again) decodes exactly today's tokens for the same seeds. On CPU hardware.StepGraph replays without a graph: the
    same buffers and calls, which is what this checks."""
    import music_scaling_laws.training.hardware as hardware
    captures = []
    monkeypatch.setattr(sample, "StepGraph", lambda *a: captures.append(a) or hardware.StepGraph(*a))
    model, _, tokenizer, _ = load_run(str(tiny_run(char_dataset, "gpt")), "cpu")
    prompts = prompts_of_different_lengths(tokenizer) * 3
    seeds = [101 + i for i in range(len(prompts))]
    for batch_size, temperature in ((0, 0.9), (4, 0.9), (0, 0)):
        tunes = {}
        for graph in (False, True):
            out = generate(model, prompts, 3 * BLOCK_SIZE, eot_id=tokenizer.eot_id, temperature=temperature, top_k=20,
                           top_p=0.95, seeds=seeds, batch_size=batch_size, graph=graph)
            tunes[graph] = {i: (new, ended) for i, new, ended, _ in out}
        assert tunes[True] == tunes[False] and sorted(tunes[True]) == list(range(len(prompts)))
        if temperature:
            assert len({len(new) for new, _ in tunes[True].values()}) > 1  # rows ended, and idled, at their own times
    assert 3 <= len(captures) <= 3 * 5  # a few captures per call (the batch halves), never one per finished tune

    def refused(*args):
        raise RuntimeError("operation not permitted when stream is capturing")
    monkeypatch.setattr(sample, "StepGraph", refused)  # a capture the GPU refuses: the same step, op by op
    report = {}
    out = generate(model, prompts, 3 * BLOCK_SIZE, eot_id=tokenizer.eot_id, temperature=0, seeds=seeds, graph=True,
                   report=report)
    assert {i: (new, ended) for i, new, ended, _ in out} == tunes[False]
    assert report == {"cuda_graph": False}  # samples.jsonl says so: a benchmark of the graph sees it did not run


def test_a_study_folder_copied_elsewhere_still_samples_from_its_own_dataset(tmp_path, char_dataset):
    """A run records its dataset's absolute path; a study folder (runs/ and data/ inside it) copied or moved
    elsewhere finds its dataset at the same place relative to the run, and a dataset that did not move along is
    still the one-line error naming it."""
    import shutil
    from helpers import run as train_tiny
    from music_scaling_laws.errors import UserError
    study = tmp_path / "study"
    shutil.copytree(char_dataset, study / "data")
    train_tiny(study / "data", study / "runs" / "g", "--max_iters=2", "--eval_interval=0")
    moved = tmp_path / "elsewhere" / "study"
    shutil.copytree(study, moved)
    shutil.rmtree(study)
    _, _, tokenizer, data_dir = load_run(str(moved / "runs" / "g"), "cpu")
    assert data_dir == str(moved / "data") and tokenizer.vocab_size > 0
    shutil.rmtree(moved / "data")
    with pytest.raises(UserError, match="the run's dataset .*study/data is not there"):
        load_run(str(moved / "runs" / "g"), "cpu")
