"""
Generate ABC tunes from a trained run (GPT or LSTM) and make them playable.

    python sample.py --run out/gpt_tiny --out_dir samples --num_samples 10 --midi --wav --svg
    python sample.py --run out/gpt_tiny --out_dir samples --prompt "X:1\\nM:6/8\\nL:1/8\\nK:D\\n" --temperature 0.8

Every sample starts after an end-of-tune token, i.e. where a fresh tune starts in the training data,
with "X:1\n" (the first line of every training tune) unless the prompt has its own X: line, or there is
no prompt and the run was trained with data_order='tunes' (it learned to write that line itself); a
prompt (--prompt, where a literal \\n is a line break, or --prompt_file) continues from there. Generation
stops at the next end-of-tune token or after --max_new_tokens. Each sample is written as a complete tune
(missing X:, M:, L:, K: headers are added and the record says which), with samples.jsonl holding one
record per sample. --midi/--wav/--svg convert with abc2midi, fluidsynth and abcm2ps; those tools exit 0
on garbage, so each conversion is judged by the file it writes, and a failed one is recorded, not dropped.
A folder never mixes two calls' tunes: an --out_dir holding an earlier call's samples is refused, and
--overwrite=True first removes them (sample_NNN.* and samples.jsonl, nothing else).

Tunes are decoded together, --batch_size at a time (default: all of them, as many as --batch_memory
allows), each row of the batch with its own prompt, length and end of tune: a finished row takes the next
waiting tune, or leaves the batch. Decoding is incremental: a preallocated KV cache for GPT, the carried
(h, c) state for LSTM, both batched. On CUDA a GPT's one-token step is one captured CUDA graph, replayed
(--cuda_graph): the step attends over the whole preallocated cache, so its shapes never change, and the tunes
are the same. A GPT cache holds at most block_size positions (learned absolute positions cannot be shifted),
so when a row's window is full it slides: the row's last block_size // 2 tokens are re-read into its fresh
cache. --no_cache recomputes the full forward pass over exactly the same
windows at every step (a reference for tests and the benchmark). Sampling runs on the device for the
whole batch; the host looks at the tokens only every ROUND tokens. Tune i draws from its own generator,
seeded --seed + i - 1, so a tune is the same whatever the batch size (up to float rounding, which a
batched matmul may do differently: a near-tie between two tokens can then go the other way).

Settings are the knobs below (configurator.py: a config file, --key=value or --key value, bare --midi).
"""
import collections
import json
import os
import re
import sys
import time

import torch

from music_scaling_laws.data import abc_text
from model import load_run
from music_scaling_laws.configurator import configure
from music_scaling_laws.errors import exit_on_user_error, fail
from music_scaling_laws.external_tools import abc_to_midi, abc_to_svg, midi_seconds, midi_to_wav
from music_scaling_laws.training.hardware import StepGraph, resolve_device
from model import to_device
from music_scaling_laws.progress import progress_bar
from music_scaling_laws.run_files import SAMPLES, samples_path

# -----------------------------------------------------------------------------
run = ""            # run folder (with ckpt.pt) or a ckpt.pt file (required)
out_dir = ""        # folder for sample_001.abc ... and samples.jsonl (required)
num_samples = 10
max_new_tokens = 1024
temperature = 1.0   # 0 = greedy
top_k = 0           # 0 = off
top_p = 0.9         # nucleus sampling keeps the smallest set of tokens with this much probability; 1.0 = off
                    # (the model's own distribution). 0.9: far fewer broken tunes (docs/results.md, "Sampling settings")
seed = 1337         # sample i (from 1) uses seed + i - 1, whatever the batch, so any one can be regenerated alone
batch_size = 0      # tunes decoded together; 0 = all of them, as many as batch_memory allows
batch_memory = 4.0  # GiB of per-tune decoding state (the GPT KV cache) that batch_size 0 may fill
prompt = ""         # start of the tune, e.g. 'X:1\nM:6/8\nK:D\n' (a literal \n is a line break)
prompt_file = ""    # or a file whose text starts the tune
midi = False        # convert each sample with abc2midi
wav = False         # render audio with fluidsynth (implies midi)
svg = False         # render sheet music with abcm2ps
soundfont = ""      # General MIDI .sf2 for wav; "" = the first of SOUNDFONTS that exists
wav_sample_rate = 22050
silence_peak = 1e-3  # a WAV whose peak is below this share of full scale is silent (rests render as silence)
# a MIDI that plays longer than 30 s + this per note is not rendered (counted: a broken 2-note sample played 15 min)
max_wav_seconds_per_note = 10.0
tool_timeout = 60.0  # seconds per external conversion
device = "auto"     # auto = cuda > mps > cpu
data_dir = ""       # dataset folder, if not the one the run recorded
# CPU threads for decoding. A token step is latency-bound: extra intra-op threads buy little, and on a busy
# 2-core machine 2 threads were 45x slower than 1 (10 vs 455 tokens/s, gpt_tiny, one tune). 0 = torch's default.
threads = 1
no_cache = False    # recompute the full window every token (slow; tests and benchmarks)
cuda_graph = "auto"  # GPT: decode a token by replaying one captured CUDA graph of the step over the whole KV cache
                    # (no per-kernel launches); auto = on CUDA; True also elsewhere (the same fixed shapes, no graph)
ignore_eot = False  # do not stop at the end of a tune (benchmarks)
overwrite = False   # replace the samples an earlier call wrote into --out_dir (only those files)
# -----------------------------------------------------------------------------
SOUNDFONTS = ("/usr/share/sounds/sf2/FluidR3_GM.sf2", "/usr/share/sounds/sf2/default-GM.sf2")  # Debian's


# what one call writes into --out_dir: sample_NNN.abc and its conversions (abcm2ps pages sample_NNN_pageK.svg, and its
# own sample_NNNPPP.svg names if it was killed before the rename), plus samples.jsonl
SAMPLE_FILE = re.compile(r"sample_\d+(_page\d+)?\.(abc|mid|wav|svg)")

# ----------------------------------------------------------------------------- decoding

ROUND = 16  # tokens decoded between two looks from the host (end-of-tune checks, retiring and starting tunes)


def pick_tokens(logits, temperature, top_k, top_p, noise):
    """Next token per row from logits (B, vocab): greedy at temperature 0, else top-k / top-p filtered sampling
    driven by noise (B, vocab), Exp(1) draws of each row's generator: argmax(p / noise) is how torch.multinomial
    draws one sample, so a seed gives the tune it gave when sample.py drew with multinomial, one tune at a time."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
        # drop a token when the tokens ranked above it already reach top_p (the first token always stays)
        drop = torch.cumsum(sorted_probs, dim=-1) - sorted_probs >= top_p
        probs = probs.scatter(-1, order, sorted_probs.masked_fill(drop, 0.0))
        probs = probs / probs.sum(dim=-1, keepdim=True)
    return (probs / noise).argmax(dim=-1)


class Decoder:
    """Next-token logits for rows of growing token sequences, buf[row, :length[row]] on the device, all rows in
    one batch: incrementally (a model state whose rows restart independently) or by full recomputation.

    Both ways condition on the same tokens: for GPT the window buf[row, start:length], where start jumps so
    that only the last block_size // 2 tokens remain whenever the window would exceed block_size; for LSTM the
    whole sequence. Positions are host ints (every row grows by one token a step whatever it samples), so
    slides and refills are planned on the host without waiting for the device.
    """

    def __init__(self, model, rows, width, device, use_cache=True, graph=False):
        self.model, self.device, self.use_cache = model, device, use_cache
        self.is_gpt = model.model_type == "gpt"
        self.block_size = model.config.block_size
        self.keep = max(1, self.block_size // 2)
        self.buf = torch.zeros(rows, width, dtype=torch.long, device=device)
        self.lengths = torch.zeros(rows, dtype=torch.long, device=device)  # = self.length, for writes on the device
        self.length, self.start = [0] * rows, [0] * rows
        self.stale = set()  # rows whose state must be re-read from their window
        # graph: a GPT's whole token (next_tokens) over the whole preallocated cache, captured once as a CUDA graph
        # (off CUDA: the same fixed shapes without the graph); its rows stay until keep_rows, which captures again
        self.graph = graph and use_cache and self.is_gpt
        self.state = (model.init_state(rows, device, static=True) if self.graph else model.init_state(rows, device)) \
            if use_cache else None
        self.step_graph, self.noise_now, self.no_capture = None, None, False
        self.reprefills = 0

    def put(self, row, ids):
        """Start a new sequence (a prompt) in a row."""
        self.buf[row, :len(ids)] = torch.tensor(ids, dtype=torch.long)
        self.lengths[row] = self.length[row] = len(ids)
        self.start[row] = max(0, len(ids) - self.block_size) if self.is_gpt else 0
        self.stale.add(row)

    def keep_rows(self, rows):
        """Go on with only these rows (host ints), in this order."""
        index = to_device(rows, self.device)
        self.buf, self.lengths = self.buf[index], self.lengths[index]
        self.length, self.start = [self.length[r] for r in rows], [self.start[r] for r in rows]
        self.stale = {i for i, r in enumerate(rows) if r in self.stale}
        if self.use_cache:
            self.state = self.model.select_rows(self.state, rows)
            self.step_graph = None  # new state tensors: the next step captures again

    def append(self, tokens):
        """Add one token (B,) to every row."""
        self.buf.scatter_(1, self.lengths[:, None], tokens[:, None])
        self.lengths += 1
        self.length = [n + 1 for n in self.length]

    def _windows(self, rows, stop):
        """buf[row, start:length - stop] of rows with windows of one width, as a (len(rows), width) tensor."""
        width = self.length[rows[0]] - stop - self.start[rows[0]]
        cols = [[self.start[r] + j for j in range(width)] for r in rows]
        return self.buf[to_device(rows, self.device)[:, None], to_device(cols, self.device)]

    def logits(self):
        """(rows, vocab) logits for the token after each row's sequence."""
        self._slide()
        if not self.use_cache:
            return self._recompute()
        self._reread_stale()
        last = self.buf.gather(1, (self.lengths - 1)[:, None])
        logits, self.state = self.model.step(last, self.state)
        return logits[:, -1]

    def next_tokens(self, pick, noise=None):
        """Sample and append one token per row, pick(logits (rows, vocab), noise) -> tokens (rows,); returns them.
        With graph, the whole token -- the last tokens' gather, the model's step, pick, the append -- is one captured
        CUDA graph (captured at the first call after a change of rows), so the host launches one thing per token;
        it plans slides and keeps its own counts ("filled", lengths) without waiting for the device."""
        if not self.graph or self.no_capture:
            tokens = pick(self.logits(), noise)
            self.append(tokens)
            return tokens
        self._slide()
        self._reread_stale()
        state, block = self.state, self.block_size
        if max(state["filled"]) + 1 > block:
            raise ValueError(f"KV cache full: more than block_size {block} positions")
        if self.step_graph is None:
            self.noise_now = None if noise is None else torch.ones_like(noise)  # a static input, filled per token

            def token(state, buf, lengths):
                last = buf.gather(1, (lengths - 1)[:, None])
                tokens = pick(self.model.step_tensors(last, state, block)[:, -1], self.noise_now)
                buf.scatter_(1, lengths[:, None], tokens[:, None])
                lengths += 1
                return tokens
            rows = len(self.length)
            warm_up = lambda: token(  # noqa: E731 (throwaway tensors of the same shapes)
                self.model.init_state(rows, self.device, static=True), self.buf.clone(), self.lengths.clone())
            try:
                self.step_graph = StepGraph(lambda: token(state, self.buf, self.lengths), warm_up,
                                            torch.device(self.device).type)
            except RuntimeError as e:  # a capture this torch or driver refuses: the same step, op by op
                print(f"note: decoding without a CUDA graph: {str(e).strip().splitlines()[0][:200]}", file=sys.stderr)
                self.no_capture = True
                return self.next_tokens(pick, noise)
        if noise is not None:
            self.noise_now.copy_(noise)
        tokens = self.step_graph.replay()
        state["filled"] = [n + 1 for n in state["filled"]]
        self.length = [n + 1 for n in self.length]
        return tokens

    def _slide(self):
        """A GPT row whose window would pass block_size keeps its last `keep` tokens, re-read into its state."""
        for row in range(len(self.length)) if self.is_gpt else ():
            if self.length[row] - self.start[row] > self.block_size:
                self.start[row] = self.length[row] - self.keep
                self.stale.add(row)
                self.reprefills += 1

    def _reread_stale(self):
        """A stale row re-reads its window but the last token, which the batched step then reads for every row."""
        by_width = {}
        for row in sorted(self.stale):
            by_width.setdefault(self.length[row] - 1 - self.start[row], []).append(row)
        for rows in by_width.values():
            self.model.reset_rows(self.state, rows, self._windows(rows, stop=1))
        self.stale.clear()

    def _recompute(self):
        # windows of different lengths, right-padded with their last token: the logits at a row's own end see
        # only its window (causal), read at its own last position
        self.stale.clear()
        width = max(n - s for n, s in zip(self.length, self.start))
        cols = [[min(s + j, n - 1) for j in range(width)] for n, s in zip(self.length, self.start)]
        windows = self.buf.gather(1, to_device(cols, self.device))
        last = to_device([n - s - 1 for n, s in zip(self.length, self.start)], self.device)
        logits = self.model(windows)[0]
        return logits[torch.arange(len(cols), device=self.device), last]


@torch.no_grad()
def generate(model, prompts, max_new_tokens, eot_id=None, temperature=1.0, top_k=0, top_p=1.0, seeds=None,
             use_cache=True, device="cpu", batch_size=0, graph=False, report=None):
    """Decode one tune per prompt (a list of token ids), batch_size (0 = all) at a time: yields, as each is
    done, (index, new token ids up to and excluding the first eot_id, ended_with_eot, seconds).

    A finished tune's row takes the next waiting prompt (or is dropped when none waits). Tune i samples with a
    torch.Generator seeded seeds[i], one draw per token, so it is the same tune whatever the batch.
    `seconds` is the tune's share of the decoding time: each round's time split evenly over its rows.
    graph: a GPT's one-token step is a captured CUDA graph (Decoder); a graph keeps its rows, so the batch
    shrinks only once half of its rows are idle (then the step is captured again: at most log2(rows) captures),
    and until then an idle row decodes a throwaway sequence, restarted every round, whose tokens nobody reads.
    report: a dict that, once every tune is out, says whether the tokens came from replays of a captured CUDA graph
    ('cuda_graph': False where the capture failed and the step ran op by op, or off CUDA).
    """
    if not all(prompts):
        raise ValueError("generation needs at least one prompt token (the end-of-tune token starts a tune)")
    rows = min(batch_size or len(prompts), len(prompts))
    decoder = Decoder(model, rows, max(map(len, prompts)) + max_new_tokens, device, use_cache, graph)
    vocab = model.config.vocab_size
    waiting = list(range(len(prompts)))[::-1]
    tunes = [None] * rows  # per row: [index, generator, new ids, seconds]
    while True:
        for row, tune in enumerate(tunes):  # a freed row takes the next prompt
            if tune is None and waiting:
                i = waiting.pop()
                tunes[row] = [i, torch.Generator().manual_seed(seeds[i]) if seeds else None, [], 0.0]
                decoder.put(row, prompts[i])
        if None in tunes:  # nothing left to start: the batch shrinks
            busy = [row for row, tune in enumerate(tunes) if tune is not None]
            if not busy:
                if report is not None:
                    report["cuda_graph"] = decoder.step_graph is not None and decoder.step_graph.graph is not None
                return
            if decoder.graph and 2 * len(busy) > len(tunes):  # keep the captured step's rows for now
                for row, tune in enumerate(tunes):
                    if tune is None:
                        decoder.put(row, prompts[0][:1])
            else:
                decoder.keep_rows(busy)
                tunes = [tunes[row] for row in busy]
        active = [tune for tune in tunes if tune is not None]
        # no row goes past max_new_tokens, and each draws exactly one noise vector per token it samples
        steps = min(ROUND, *(max_new_tokens - len(new) for _, _, new, _ in active))
        t0 = time.perf_counter()
        noise = None
        if temperature > 0:
            # CPU generators, as multinomial used before: a seed gives the same tune on any device (up to rounding).
            # Host work of rows x steps x vocab draws a round: small for chars, maybe a bound for BPE on a GPU
            noise = torch.stack([torch.empty(steps, vocab).exponential_(generator=tune[1]) if tune
                                 else torch.ones(steps, vocab) for tune in tunes])
            noise = to_device(noise, device)
        sampled = torch.empty(len(tunes), steps, dtype=torch.long, device=device)
        pick = lambda logits, noise: pick_tokens(logits, temperature, top_k, top_p, noise)  # noqa: E731
        for j in range(steps):
            sampled[:, j] = decoder.next_tokens(pick, None if noise is None else noise[:, j])
        sampled = sampled.tolist()  # the one wait for the device per round
        share = (time.perf_counter() - t0) / len(active)
        for row, (tune, ids) in enumerate(zip(tunes, sampled)):
            if tune is None:  # an idle row of a captured step
                continue
            i, _, new, _ = tune
            tune[3] += share
            ended = eot_id in ids
            new.extend(ids[:ids.index(eot_id)] if ended else ids)
            if ended or len(new) == max_new_tokens:
                yield i, new, ended, tune[3]
                tunes[row] = None


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
        return abc_text.prompt_from_command_line(cfg["prompt"])
    try:
        with open(cfg["prompt_file"]) as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as e:
        fail(f"cannot read --prompt_file {cfg['prompt_file']}: {e}")


def check_config(cfg):
    """One-line errors for values no run can use."""
    if not cfg["run"] or not cfg["out_dir"]:
        fail("--run (a run folder or ckpt.pt) and --out_dir (the folder for the samples) are required")
    if cfg["num_samples"] < 1 or cfg["max_new_tokens"] < 1:
        fail("--num_samples and --max_new_tokens must be at least 1")
    if cfg["batch_size"] < 0 or cfg["batch_memory"] <= 0:
        fail("need --batch_size >= 0 (0 = all samples at once) and --batch_memory > 0")
    if cfg["temperature"] < 0 or cfg["top_k"] < 0 or not 0 < cfg["top_p"] <= 1:
        fail("need --temperature >= 0, --top_k >= 0 and 0 < --top_p <= 1")
    if cfg["threads"] < 0:
        fail("--threads must be >= 0")
    if cfg["tool_timeout"] <= 0:
        fail("--tool_timeout must be positive")
    if not cfg["max_wav_seconds_per_note"] > 0:
        fail(f"--max_wav_seconds_per_note must be positive, got {cfg['max_wav_seconds_per_note']}")
    if cfg["cuda_graph"] not in ("auto", "True", "False"):
        fail(f"--cuda_graph must be auto, True or False, got {cfg['cuda_graph']!r}")


def earlier_samples(out_dir, overwrite):
    """The files an earlier call of sample.py left in out_dir, which this call will remove (none if out_dir is new).
    Refuses (one line) an out_dir that is a file, or one holding samples without overwrite: eval_syntax.py and the
    study score every sample_*.abc of a folder, so tunes of two calls must never sit side by side."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        fail(f"--out_dir {out_dir} is a file, not a folder")
    if not os.path.isdir(out_dir):
        return []
    ours = sorted(f for f in os.listdir(out_dir) if f == SAMPLES or SAMPLE_FILE.fullmatch(f))
    if ours and not overwrite:
        fail(f"--out_dir {out_dir} already holds samples ({', '.join(ours[:2])}{', ...' if len(ours) > 2 else ''}): "
             f"--overwrite=True replaces them, or choose another --out_dir")
    return [os.path.join(out_dir, f) for f in ours]


def state_bytes(state):
    """Bytes of the tensors in a decoding state (nested dicts, lists and tuples)."""
    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size()
    if isinstance(state, dict):
        state = list(state.values())
    return sum(map(state_bytes, state)) if isinstance(state, (list, tuple)) else 0


def batch_rows(model, gib):
    """How many tunes fit gib of decoding memory: a row's state (sized on the meta device, nothing allocated)
    twice, since a slide re-reads rows into a fresh state before copying it in, plus its sampling noise."""
    row = 2 * state_bytes(model.init_state(1, "meta")) + 2 * ROUND * model.config.vocab_size * 4
    return max(1, int(gib * 2**30) // row)


def convert(record, abc_path, cfg, sf2):
    """Add the MIDI, WAV and SVG conversions cfg asks for to a sample's record (failed ones included)."""
    stem = abc_path[:-len(".abc")]
    if cfg["midi"] or cfg["wav"]:
        midi_path = stem + ".mid"
        record.update(abc_to_midi(abc_path, midi_path, cfg["tool_timeout"]))
        record["midi"] = midi_path if os.path.exists(midi_path) else None
    if cfg["wav"]:
        wav_path = stem + ".wav"
        if os.path.exists(wav_path):
            os.remove(wav_path)
        record.update({"wav": None, "wav_ok": False, "wav_peak": 0.0})
        # audio from any MIDI with notes: abc2midi recovers from many errors (a barely trained model's tunes have
        # some), and hearing them is the point of the listening grid; the summary counts both, so "WAV ok" is read
        # against "MIDI written", never against the stricter "MIDI ok" (without abc2midi errors)
        seconds = midi_seconds(midi_path) if record["midi_notes"] else 0.0
        limit = 30 + cfg["max_wav_seconds_per_note"] * record["midi_notes"]
        if not record["midi_notes"]:
            record["wav_skipped"] = "no_notes"
        elif seconds > limit:  # a broken tune (a note held for minutes) would render a WAV of that length
            record["wav_skipped"] = f"too_long: plays {seconds:.0f} s, over {limit:.0f} s for {record['midi_notes']} notes"
        else:
            record.update(midi_to_wav(midi_path, wav_path, sf2, cfg["tool_timeout"], cfg["wav_sample_rate"],
                                      cfg["silence_peak"]))
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
            if key == "midi_ok":  # what "MIDI ok" leaves out: files with notes that abc2midi reported errors for
                line += (f" without abc2midi errors ({sum(r['midi_notes'] > 0 for r in records)}/{len(records)} "
                         f"written with notes)")
            skipped = key == "wav_ok" and collections.Counter(r["wav_skipped"].split(":")[0] for r in records
                                                             if r.get("wav_skipped"))
            if skipped:
                reasons = (f"{n} {why.replace('_', ' ')}" for why, n in sorted(skipped.items()))
                line += f" (not rendered: {', '.join(reasons)})"
    print(line)
    print(f"wrote {out_dir}/sample_001.abc ... and {samples_path(out_dir)}")


# the names these knobs had before 2026-11-30: accepted, with a note, until the next release
RENAMED = {"out": "out_dir"}


@exit_on_user_error
def main(argv=None):
    cfg = configure(globals(), sys.argv[1:] if argv is None else argv, renamed=RENAMED)
    check_config(cfg)
    cfg["device"] = resolve_device(cfg["device"])
    if cfg["threads"]:
        torch.set_num_threads(cfg["threads"])
    prompt_text = read_prompt(cfg)
    sf2 = find_soundfont(cfg["soundfont"]) if cfg["wav"] else None
    old_samples = earlier_samples(cfg["out_dir"], cfg["overwrite"])  # before loading the model: refuse early

    model, ckpt, tokenizer, _ = load_run(cfg["run"], cfg["device"], cfg["data_dir"])
    # prepare.py renumbers every training tune to X:1, so a tune always opens with "X:1\n". A model trained
    # in 'tunes' order saw every tune start right after an EOT and writes that line itself: its unconditional
    # tunes start from the EOT alone. A 'stride' model's windows start anywhere and rarely show the token
    # after an EOT at position 0, so it gets the line written for it (it adds no information). A prompt
    # without its own X: line always gets it, since every training tune has its header before the rest.
    user_prompt = prompt_text
    tune_order = ckpt["config"].get("data_order") == "tunes"
    if not prompt_text.startswith("X:") and (prompt_text or not tune_order):
        prompt_text = abc_text.TUNE_OPENING + prompt_text
    prompt_ids = [tokenizer.eot_id] + tokenizer.encode(prompt_text)
    try:
        os.makedirs(cfg["out_dir"], exist_ok=True)
    except OSError as e:  # a parent that is a file, no permission
        fail(f"cannot create --out_dir {cfg['out_dir']}: {e.strerror}")
    for path in old_samples:  # only now that the model loaded: a failed call leaves the old samples alone
        os.remove(path)
    n = cfg["num_samples"]
    rows = min(cfg["batch_size"] or batch_rows(model, cfg["batch_memory"]), n)
    # run_id: which training of the run drew these tunes (one trained again has another), as calc_perplexity records
    settings = {"run": cfg["run"], "run_id": ckpt.get("progress", {}).get("run_id"),
                "max_new_tokens": cfg["max_new_tokens"], "temperature": cfg["temperature"],
                "top_k": cfg["top_k"], "top_p": cfg["top_p"], "cache": not cfg["no_cache"], "device": cfg["device"],
                "batch_size": rows}
    use_graph = cfg["cuda_graph"] == "True" or (cfg["cuda_graph"] == "auto" and cfg["device"].startswith("cuda"))
    decoding = "full recomputation" if cfg["no_cache"] else "incremental decoding" + (
        ", a CUDA graph per token" if use_graph and cfg["device"].startswith("cuda") and model.model_type == "gpt" else "")
    print(f"{ckpt['model_type']} with {model.num_params():,} parameters, {tokenizer.name} tokenizer, "
          f"block_size {model.config.block_size}, {decoding}, "
          f"{rows} tune{'s' if rows > 1 else ''} at a time")

    records, total_tokens, total_seconds, decoded = {}, 0, 0.0, {}
    bar = progress_bar(total=n, desc="samples", unit="tune")
    tunes = generate(model, [prompt_ids] * n, cfg["max_new_tokens"], eot_id=None if cfg["ignore_eot"] else tokenizer.eot_id,
                     temperature=cfg["temperature"], top_k=cfg["top_k"], top_p=cfg["top_p"],
                     seeds=[cfg["seed"] + i for i in range(n)], use_cache=not cfg["no_cache"], device=cfg["device"],
                     batch_size=rows, graph=use_graph, report=decoded)
    for i, new_ids, ended, seconds in tunes:  # in the order they finish
        total_tokens, total_seconds = total_tokens + len(new_ids), total_seconds + seconds
        tune, added = abc_text.complete_headers(prompt_text + tokenizer.decode(new_ids))
        abc_path = os.path.join(cfg["out_dir"], f"sample_{i + 1:03d}.abc")
        with open(abc_path, "w") as f:
            f.write(tune)
        # seconds: the tune's share of the batch's decoding time (see generate), so they add up to the wall time
        record = {"file": abc_path, "prompt": user_prompt, "tune_opening": prompt_text[:len(prompt_text) - len(user_prompt)],
                  "headers_added": added, "tokens": len(new_ids),
                  "seconds": seconds, "tokens_per_s": len(new_ids) / seconds if seconds > 0 else None,
                  "ended_with_eot": ended, "seed": cfg["seed"] + i, **settings}
        convert(record, abc_path, cfg, sf2)
        records[i] = record
        bar.update()
        bar.set_postfix(tok_s=f"{total_tokens / total_seconds:.0f}" if total_seconds else "-")
    bar.close()
    records = [{**records[i], "cuda_graph": decoded.get("cuda_graph")} for i in range(n)]

    with open(samples_path(cfg["out_dir"]), "w") as f:
        for record in records:
            f.write(json.dumps(record) + "\n")
    print_summary(records, total_tokens, total_seconds, cfg["out_dir"])
    return records


if __name__ == "__main__":
    main()
