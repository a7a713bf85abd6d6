"""
Generate ABC tunes from a trained run (GPT or LSTM) and make them playable.

    python sample.py --run out/gpt_tiny --out samples --num_samples 10 --midi --wav --svg
    python sample.py --run out/gpt_tiny --out samples --prompt "X:1\\nM:6/8\\nL:1/8\\nK:D\\n" --temperature 0.8

Every sample starts after an end-of-tune token, i.e. where a fresh tune starts in the training data,
with "X:1\n" (the first line of every training tune) unless the prompt has its own X: line; a
prompt (--prompt, where a literal \\n is a line break, or --prompt_file) continues from there. Generation
stops at the next end-of-tune token or after --max_new_tokens. Each sample is written as a complete tune
(missing X:, M:, L:, K: headers are added and the record says which), with samples.jsonl holding one
record per sample. --midi/--wav/--svg convert with abc2midi, fluidsynth and abcm2ps; those tools exit 0
on garbage, so each conversion is judged by the file it writes, and a failed one is recorded, not dropped.

Decoding is incremental: a KV cache for GPT, the carried (h, c) state for LSTM. A GPT cache holds at
most block_size positions (learned absolute positions cannot be shifted), so when it is full the window
slides: the last block_size // 2 tokens are re-read into a fresh cache. --no_cache recomputes the full
forward pass over exactly the same window at every step (a reference for tests and the benchmark).
"""
import argparse
import glob
import json
import os
import subprocess
import sys
import time
import wave

import numpy as np
import torch
from tqdm import tqdm

from abc_text import complete_headers
from eval_syntax import run_abc2midi_file

# -----------------------------------------------------------------------------
num_samples = 10
max_new_tokens = 1024
temperature = 1.0   # 0 = greedy
top_k = 0           # 0 = off
top_p = 1.0         # 1.0 = off (nucleus sampling keeps the smallest set with this much probability)
seed = 1337         # sample i uses seed + i, so any one sample can be regenerated alone
soundfont = "/usr/share/sounds/sf2/FluidR3_GM.sf2"
fallback_soundfont = "/usr/share/sounds/sf2/default-GM.sf2"
wav_sample_rate = 22050
silence_peak = 1e-3  # a WAV whose peak is below this share of full scale is silent (rests render as silence)
tool_timeout = 60    # seconds per external conversion
# CPU threads for decoding. One token at a time is latency-bound: extra intra-op threads buy little, and on
# a busy 2-core machine 2 threads were 45x slower than 1 (10 vs 455 tokens/s, gpt_tiny). 0 = torch's default.
threads = 1
TUNE_OPENING = "X:1\n"  # how every cleaned training tune starts (see main)
# -----------------------------------------------------------------------------


# ----------------------------------------------------------------------------- decoding

def sample_next_token(logits, temperature, top_k, top_p, generator):
    """One token id from logits (vocab,): greedy at temperature 0, else top-k / top-p filtered sampling."""
    if temperature == 0:
        return int(torch.argmax(logits))
    logits = logits.float() / temperature
    if top_k and top_k < logits.numel():
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        # drop a token when the tokens ranked above it already reach top_p (the first token always stays)
        drop = torch.cumsum(sorted_probs, dim=-1) - sorted_probs >= top_p
        probs = probs.scatter(0, order, sorted_probs.masked_fill(drop, 0.0))
        probs = probs / probs.sum()
    return int(torch.multinomial(probs.cpu(), 1, generator=generator))


class Decoder:
    """Next-token logits for a growing token sequence, incrementally (cache/state) or by full recomputation.

    Both ways condition on the same tokens: for GPT the window tokens[start:], where start jumps so that
    only the last block_size // 2 tokens remain whenever the window would exceed block_size; for LSTM the
    whole sequence.
    """

    def __init__(self, model, device, use_cache=True):
        self.model, self.device, self.use_cache = model, device, use_cache
        self.is_gpt = model.model_type == "gpt"
        self.block_size = model.config.block_size
        self.keep = max(1, self.block_size // 2)
        self.tokens, self.start, self.state = [], 0, None
        self.reprefills = 0

    def _forward(self, ids):
        return self.model(torch.tensor([ids], dtype=torch.long, device=self.device))[0][0, -1]

    def _step(self, ids):
        logits, self.state = self.model.step(torch.tensor([ids], dtype=torch.long, device=self.device), self.state)
        return logits[0, -1]

    def prefill(self, ids):
        """Start from a prompt; returns the logits for the token after it."""
        self.tokens = list(ids)
        self.start = max(0, len(self.tokens) - self.block_size) if self.is_gpt else 0
        if not self.use_cache:
            return self._forward(self.tokens[self.start:])
        self.state = self.model.init_state(1, self.device)
        return self._step(self.tokens[self.start:])

    def append(self, token):
        """Add one token; returns the logits for the token after it."""
        self.tokens.append(token)
        slide = self.is_gpt and len(self.tokens) - self.start > self.block_size
        if slide:
            self.start = len(self.tokens) - self.keep
            self.reprefills += 1
        if not self.use_cache:
            return self._forward(self.tokens[self.start:])
        if slide:
            self.state = self.model.init_state(1, self.device)
            return self._step(self.tokens[self.start:])
        return self._step([token])


@torch.no_grad()
def generate(model, prompt_ids, max_new_tokens, eot_id=None, temperature=1.0, top_k=0, top_p=1.0,
             generator=None, use_cache=True, device="cpu"):
    """New token ids after prompt_ids, up to and excluding the first eot_id (if given).

    Returns (new_ids, ended_with_eot).
    """
    if not prompt_ids:
        raise ValueError("generation needs at least one prompt token (the end-of-tune token starts a tune)")
    decoder = Decoder(model, device, use_cache)
    logits = decoder.prefill(prompt_ids)
    new_ids = []
    for _ in range(max_new_tokens):
        token = sample_next_token(logits, temperature, top_k, top_p, generator)
        if token == eot_id:
            return new_ids, True
        new_ids.append(token)
        if len(new_ids) == max_new_tokens:
            break
        logits = decoder.append(token)
    return new_ids, False


# ----------------------------------------------------------------------------- conversions

def abc_to_svg(abc_path, svg_path):
    """Sheet music with abcm2ps -g. It writes <stem>001.svg, <stem>002.svg ... (one per page) and nothing
    for text it cannot set; pages are renamed to svg_path, <stem>_page2.svg ..."""
    stem = svg_path[:-len(".svg")] if svg_path.endswith(".svg") else svg_path
    for old in glob.glob(glob.escape(stem) + "[0-9][0-9][0-9].svg"):
        os.remove(old)
    out = {"svg": None, "svg_ok": False, "svg_errors": []}
    try:
        proc = subprocess.run(["abcm2ps", "-g", "-O", stem + ".svg", abc_path], capture_output=True, text=True,
                              errors="replace", timeout=tool_timeout)
    except subprocess.TimeoutExpired:
        out["svg_errors"] = [f"abcm2ps timed out after {tool_timeout} s"]
        return out
    out["svg_errors"] = [l.strip() for l in (proc.stdout + proc.stderr).splitlines() if "error" in l.lower()][:5]
    pages = sorted(glob.glob(glob.escape(stem) + "[0-9][0-9][0-9].svg"))
    paths = []
    for n, page in enumerate(pages, 1):
        target = svg_path if n == 1 else f"{stem}_page{n}.svg"
        os.replace(page, target)
        paths.append(target)
    if paths:
        with open(paths[0], errors="replace") as f:
            out["svg_ok"] = "<svg" in f.read(2000)
        out["svg"] = paths[0]
        if len(paths) > 1:
            out["svg_pages"] = paths
    return out


def wav_peak(wav_path):
    """Peak amplitude of a 16/32-bit PCM WAV as a share of full scale (0 for silence or an unreadable file)."""
    try:
        with wave.open(wav_path) as w:
            width, frames = w.getsampwidth(), w.readframes(w.getnframes())
    except (wave.Error, EOFError, OSError):
        return 0.0
    dtype = {2: np.int16, 4: np.int32}.get(width)
    if dtype is None or not frames:
        return 0.0
    samples = np.frombuffer(frames, dtype=dtype)
    return float(np.abs(samples.astype(np.float64)).max()) / np.iinfo(dtype).max


def midi_to_wav(midi_path, wav_path, soundfont_path):
    """Audio with fluidsynth and a General MIDI soundfont, judged by the WAV: written and not silent."""
    if os.path.exists(wav_path):
        os.remove(wav_path)
    out = {"wav": None, "wav_ok": False, "wav_peak": 0.0}
    try:
        subprocess.run(["fluidsynth", "-ni", "-F", wav_path, "-r", str(wav_sample_rate), soundfont_path, midi_path],
                       capture_output=True, timeout=tool_timeout)
    except subprocess.TimeoutExpired:
        return out
    if os.path.exists(wav_path):
        out["wav"] = wav_path
        out["wav_peak"] = wav_peak(wav_path)
        out["wav_ok"] = out["wav_peak"] > silence_peak
    return out


def find_soundfont():
    for path in (soundfont, fallback_soundfont):
        if os.path.exists(path):
            return path
    sys.exit(f"error: no General MIDI soundfont at {soundfont} or {fallback_soundfont} "
             "(Debian: apt-get install fluid-soundfont-gm), or pass --soundfont")


# ----------------------------------------------------------------------------- command line

def load_run(run, device, data_dir=None):
    """(model, checkpoint, tokenizer) for a run folder or ckpt.pt, with the tokenizer it was trained on."""
    from model import load_checkpoint
    from tokenizer import load_tokenizer
    path = os.path.join(run, "ckpt.pt") if os.path.isdir(run) else run
    if not os.path.isfile(path):
        sys.exit(f"error: no checkpoint at {path} (give a run folder holding ckpt.pt, or the ckpt.pt itself)")
    model, ckpt = load_checkpoint(path, device=device)
    data_dir = data_dir or ckpt.get("config", {}).get("data_dir")
    if not data_dir:
        sys.exit(f"error: {path} does not record its data_dir; pass --data_dir")
    try:
        tokenizer = load_tokenizer(data_dir)
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"error: cannot load the run's tokenizer from {data_dir}: {e} (pass --data_dir if it moved)")
    if tokenizer.vocab_size != model.config.vocab_size:
        sys.exit(f"error: tokenizer in {data_dir} has {tokenizer.vocab_size} tokens but the model was trained "
                 f"with {model.config.vocab_size}: wrong --data_dir?")
    return model, ckpt, tokenizer


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="run folder (with ckpt.pt) or a ckpt.pt file")
    parser.add_argument("--out", required=True, help="folder for sample_001.abc ... and samples.jsonl")
    parser.add_argument("--num_samples", type=int, default=num_samples)
    parser.add_argument("--max_new_tokens", type=int, default=max_new_tokens)
    parser.add_argument("--temperature", type=float, default=temperature, help="0 = greedy")
    parser.add_argument("--top_k", type=int, default=top_k, help="0 = off")
    parser.add_argument("--top_p", type=float, default=top_p, help="1.0 = off")
    parser.add_argument("--seed", type=int, default=seed)
    prompt = parser.add_mutually_exclusive_group()
    prompt.add_argument("--prompt", help=r"start of the tune, e.g. 'X:1\nM:6/8\nK:D\n' (\n = line break)")
    prompt.add_argument("--prompt_file", help="file whose text starts the tune")
    parser.add_argument("--midi", action="store_true", help="convert each sample with abc2midi")
    parser.add_argument("--wav", action="store_true", help="render audio with fluidsynth (implies --midi)")
    parser.add_argument("--svg", action="store_true", help="render sheet music with abcm2ps")
    parser.add_argument("--soundfont", default=None, help=f"General MIDI .sf2 (default {soundfont})")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--data_dir", default=None, help="dataset folder, if not the one the run recorded")
    parser.add_argument("--threads", type=int, default=threads, help="CPU threads (0: torch default)")
    parser.add_argument("--no_cache", action="store_true", help="recompute the full window every token (slow; tests/benchmarks)")
    parser.add_argument("--ignore_eot", action="store_true", help="do not stop at end of tune (benchmarks)")
    args = parser.parse_args(argv)
    if args.num_samples < 1 or args.max_new_tokens < 1:
        sys.exit("error: --num_samples and --max_new_tokens must be at least 1")
    if args.temperature < 0 or args.top_k < 0 or not 0 < args.top_p <= 1:
        sys.exit("error: need --temperature >= 0, --top_k >= 0 and 0 < --top_p <= 1")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("error: --device cuda but no CUDA GPU is available")
    if args.threads < 0:
        sys.exit("error: --threads must be >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.prompt_file:
        try:
            with open(args.prompt_file) as f:
                prompt_text = f.read()
        except (OSError, UnicodeDecodeError) as e:
            sys.exit(f"error: cannot read --prompt_file {args.prompt_file}: {e}")
    else:
        prompt_text = (args.prompt or "").replace("\\n", "\n")
    sf2 = (args.soundfont if args.soundfont else find_soundfont()) if args.wav else None
    if sf2 and not os.path.exists(sf2):
        sys.exit(f"error: soundfont {sf2} does not exist")

    model, ckpt, tokenizer = load_run(args.run, args.device, args.data_dir)
    # prepare.py renumbers every training tune to X:1, so a tune always opens with "X:1\n": writing it
    # for the model adds no information, and it spares the model its weakest prediction (the token after
    # an EOT at position 0, a context that training windows, which start anywhere, rarely show).
    user_prompt = prompt_text
    if not prompt_text.startswith("X:"):
        prompt_text = TUNE_OPENING + prompt_text
    prompt_ids = [tokenizer.eot_id] + tokenizer.encode(prompt_text)
    os.makedirs(args.out, exist_ok=True)
    settings = {"run": args.run, "max_new_tokens": args.max_new_tokens, "temperature": args.temperature,
                "top_k": args.top_k, "top_p": args.top_p, "cache": not args.no_cache, "device": args.device}
    print(f"{ckpt['model_type']} with {model.num_params():,} parameters, {tokenizer.name} tokenizer, "
          f"block_size {model.config.block_size}, {'full recomputation' if args.no_cache else 'incremental decoding'}")

    records, total_tokens, total_seconds = [], 0, 0.0
    bar = tqdm(range(1, args.num_samples + 1), desc="samples", unit="tune")
    for i in bar:
        generator = torch.Generator().manual_seed(args.seed + i - 1)
        t0 = time.perf_counter()
        new_ids, ended = generate(model, prompt_ids, args.max_new_tokens,
                                  eot_id=None if args.ignore_eot else tokenizer.eot_id,
                                  temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                                  generator=generator, use_cache=not args.no_cache, device=args.device)
        seconds = time.perf_counter() - t0
        total_tokens, total_seconds = total_tokens + len(new_ids), total_seconds + seconds
        tune, added = complete_headers(prompt_text + tokenizer.decode(new_ids))
        name = f"sample_{i:03d}"
        abc_path = os.path.join(args.out, name + ".abc")
        with open(abc_path, "w") as f:
            f.write(tune)
        record = {"file": abc_path, "prompt": user_prompt, "tune_opening": prompt_text[:len(prompt_text) - len(user_prompt)], "headers_added": added, "tokens": len(new_ids),
                  "seconds": seconds, "tokens_per_s": len(new_ids) / seconds if seconds > 0 else None,
                  "ended_with_eot": ended, "seed": args.seed + i - 1, **settings}
        if args.midi or args.wav:
            midi_path = os.path.join(args.out, name + ".mid")
            record.update(run_abc2midi_file(abc_path, midi_path, tool_timeout))
            record["midi"] = midi_path if os.path.exists(midi_path) else None
        if args.wav:
            if record["midi_notes"] > 0:  # render whatever notes abc2midi managed, even with errors on the way
                record.update(midi_to_wav(midi_path, os.path.join(args.out, name + ".wav"), sf2))
            else:
                record.update({"wav": None, "wav_ok": False, "wav_peak": 0.0})
        if args.svg:
            record.update(abc_to_svg(abc_path, os.path.join(args.out, name + ".svg")))
        records.append(record)
        bar.set_postfix(tok_s=f"{total_tokens / total_seconds:.0f}" if total_seconds else "-")
    bar.close()

    with open(os.path.join(args.out, "samples.jsonl"), "w") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
    print(f"{len(records)} samples, {total_tokens} tokens in {total_seconds:.2f} s: "
          f"{total_tokens / total_seconds:.1f} tokens/s" if total_seconds else f"{len(records)} samples")
    ended = sum(r["ended_with_eot"] for r in records)
    line = f"ended with end-of-tune: {ended}/{len(records)}; headers added to {sum(bool(r['headers_added']) for r in records)}"
    for key in ("midi_ok", "wav_ok", "svg_ok"):
        if records and key in records[0]:
            line += f"; {key.split('_')[0].upper()} ok {sum(r[key] for r in records)}/{len(records)}"
    print(line)
    print(f"wrote {args.out}/sample_001.abc ... and {args.out}/samples.jsonl")
    return records


if __name__ == "__main__":
    main()
