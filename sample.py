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

Settings are the knobs below (configurator.py: a config file, --key=value or --key value, bare --midi).
"""
import json
import os
import sys
import time

import torch
from tqdm import tqdm

import abc_text
from checkpoint import load_run
from configurator import configure, fail
from external_tools import abc_to_midi, abc_to_svg, midi_to_wav
from hardware import resolve_device

# -----------------------------------------------------------------------------
run = ""            # run folder (with ckpt.pt) or a ckpt.pt file (required)
out = ""            # folder for sample_001.abc ... and samples.jsonl (required)
num_samples = 10
max_new_tokens = 1024
temperature = 1.0   # 0 = greedy
top_k = 0           # 0 = off
top_p = 1.0         # 1.0 = off (nucleus sampling keeps the smallest set with this much probability)
seed = 1337         # sample i uses seed + i, so any one sample can be regenerated alone
prompt = ""         # start of the tune, e.g. 'X:1\nM:6/8\nK:D\n' (a literal \n is a line break)
prompt_file = ""    # or a file whose text starts the tune
midi = False        # convert each sample with abc2midi
wav = False         # render audio with fluidsynth (implies midi)
svg = False         # render sheet music with abcm2ps
soundfont = ""      # General MIDI .sf2 for wav; "" = the first of SOUNDFONTS that exists
wav_sample_rate = 22050
silence_peak = 1e-3  # a WAV whose peak is below this share of full scale is silent (rests render as silence)
tool_timeout = 60.0  # seconds per external conversion
device = "auto"     # auto = cuda > mps > cpu
data_dir = ""       # dataset folder, if not the one the run recorded
# CPU threads for decoding. One token at a time is latency-bound: extra intra-op threads buy little, and on
# a busy 2-core machine 2 threads were 45x slower than 1 (10 vs 455 tokens/s, gpt_tiny). 0 = torch's default.
threads = 1
no_cache = False    # recompute the full window every token (slow; tests and benchmarks)
ignore_eot = False  # do not stop at the end of a tune (benchmarks)
# -----------------------------------------------------------------------------
SOUNDFONTS = ("/usr/share/sounds/sf2/FluidR3_GM.sf2", "/usr/share/sounds/sf2/default-GM.sf2")  # Debian's


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


# ----------------------------------------------------------------------------- command line

def find_soundfont(path):
    """The soundfont to render with: the one given, or the first General MIDI one installed."""
    if path:
        if not os.path.exists(path):
            fail(f"soundfont {path} does not exist")
        return path
    for candidate in SOUNDFONTS:
        if os.path.exists(candidate):
            return candidate
    fail(f"no General MIDI soundfont at {' or '.join(SOUNDFONTS)} "
         "(Debian: apt-get install fluid-soundfont-gm), or pass --soundfont")


def read_prompt(cfg):
    """The prompt text: --prompt with a literal \\n read as a line break, or the text of --prompt_file."""
    if cfg["prompt"] and cfg["prompt_file"]:
        fail("give --prompt or --prompt_file, not both")
    if not cfg["prompt_file"]:
        return cfg["prompt"].replace("\\n", "\n")
    try:
        with open(cfg["prompt_file"]) as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as e:
        fail(f"cannot read --prompt_file {cfg['prompt_file']}: {e}")


def check_config(cfg):
    """One-line errors for values no run can use."""
    if not cfg["run"] or not cfg["out"]:
        fail("--run (a run folder or ckpt.pt) and --out (the folder for the samples) are required")
    if cfg["num_samples"] < 1 or cfg["max_new_tokens"] < 1:
        fail("--num_samples and --max_new_tokens must be at least 1")
    if cfg["temperature"] < 0 or cfg["top_k"] < 0 or not 0 < cfg["top_p"] <= 1:
        fail("need --temperature >= 0, --top_k >= 0 and 0 < --top_p <= 1")
    if cfg["threads"] < 0:
        fail("--threads must be >= 0")
    if cfg["tool_timeout"] <= 0:
        fail("--tool_timeout must be positive")


def convert(record, abc_path, cfg, sf2):
    """Add the MIDI, WAV and SVG conversions cfg asks for to a sample's record (failed ones included)."""
    stem = abc_path[:-len(".abc")]
    if cfg["midi"] or cfg["wav"]:
        midi_path = stem + ".mid"
        record.update(abc_to_midi(abc_path, midi_path, cfg["tool_timeout"]))
        record["midi"] = midi_path if os.path.exists(midi_path) else None
    if cfg["wav"]:
        if record["midi_notes"] > 0:  # render whatever notes abc2midi managed, even with errors on the way
            record.update(midi_to_wav(midi_path, stem + ".wav", sf2, cfg["tool_timeout"],
                                      cfg["wav_sample_rate"], cfg["silence_peak"]))
        else:
            record.update({"wav": None, "wav_ok": False, "wav_peak": 0.0})
    if cfg["svg"]:
        record.update(abc_to_svg(abc_path, stem + ".svg", cfg["tool_timeout"]))


def print_summary(records, total_tokens, total_seconds, out_dir):
    print(f"{len(records)} samples, {total_tokens} tokens in {total_seconds:.2f} s: "
          f"{total_tokens / total_seconds:.1f} tokens/s" if total_seconds else f"{len(records)} samples")
    ended = sum(r["ended_with_eot"] for r in records)
    line = f"ended with end-of-tune: {ended}/{len(records)}; headers added to {sum(bool(r['headers_added']) for r in records)}"
    for key in ("midi_ok", "wav_ok", "svg_ok"):
        if records and key in records[0]:
            line += f"; {key.split('_')[0].upper()} ok {sum(r[key] for r in records)}/{len(records)}"
    print(line)
    print(f"wrote {out_dir}/sample_001.abc ... and {out_dir}/samples.jsonl")


def main(argv=None):
    cfg = configure(globals(), sys.argv[1:] if argv is None else argv)
    check_config(cfg)
    cfg["device"] = resolve_device(cfg["device"])
    if cfg["threads"]:
        torch.set_num_threads(cfg["threads"])
    prompt_text = read_prompt(cfg)
    sf2 = find_soundfont(cfg["soundfont"]) if cfg["wav"] else None

    model, ckpt, tokenizer, _ = load_run(cfg["run"], cfg["device"], cfg["data_dir"])
    # prepare.py renumbers every training tune to X:1, so a tune always opens with "X:1\n": writing it
    # for the model adds no information, and it spares the model its weakest prediction (the token after
    # an EOT at position 0, a context that training windows, which start anywhere, rarely show).
    user_prompt = prompt_text
    if not prompt_text.startswith("X:"):
        prompt_text = abc_text.TUNE_OPENING + prompt_text
    prompt_ids = [tokenizer.eot_id] + tokenizer.encode(prompt_text)
    os.makedirs(cfg["out"], exist_ok=True)
    settings = {"run": cfg["run"], "max_new_tokens": cfg["max_new_tokens"], "temperature": cfg["temperature"],
                "top_k": cfg["top_k"], "top_p": cfg["top_p"], "cache": not cfg["no_cache"], "device": cfg["device"]}
    print(f"{ckpt['model_type']} with {model.num_params():,} parameters, {tokenizer.name} tokenizer, "
          f"block_size {model.config.block_size}, {'full recomputation' if cfg['no_cache'] else 'incremental decoding'}")

    records, total_tokens, total_seconds = [], 0, 0.0
    bar = tqdm(range(1, cfg["num_samples"] + 1), desc="samples", unit="tune")
    for i in bar:
        generator = torch.Generator().manual_seed(cfg["seed"] + i - 1)
        t0 = time.perf_counter()
        new_ids, ended = generate(model, prompt_ids, cfg["max_new_tokens"],
                                  eot_id=None if cfg["ignore_eot"] else tokenizer.eot_id,
                                  temperature=cfg["temperature"], top_k=cfg["top_k"], top_p=cfg["top_p"],
                                  generator=generator, use_cache=not cfg["no_cache"], device=cfg["device"])
        seconds = time.perf_counter() - t0
        total_tokens, total_seconds = total_tokens + len(new_ids), total_seconds + seconds
        tune, added = abc_text.complete_headers(prompt_text + tokenizer.decode(new_ids))
        abc_path = os.path.join(cfg["out"], f"sample_{i:03d}.abc")
        with open(abc_path, "w") as f:
            f.write(tune)
        record = {"file": abc_path, "prompt": user_prompt, "tune_opening": prompt_text[:len(prompt_text) - len(user_prompt)],
                  "headers_added": added, "tokens": len(new_ids),
                  "seconds": seconds, "tokens_per_s": len(new_ids) / seconds if seconds > 0 else None,
                  "ended_with_eot": ended, "seed": cfg["seed"] + i - 1, **settings}
        convert(record, abc_path, cfg, sf2)
        records.append(record)
        bar.set_postfix(tok_s=f"{total_tokens / total_seconds:.0f}" if total_seconds else "-")
    bar.close()

    with open(os.path.join(cfg["out"], "samples.jsonl"), "w") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
    print_summary(records, total_tokens, total_seconds, cfg["out"])
    return records


if __name__ == "__main__":
    main()
