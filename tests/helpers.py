"""
Plain helpers the tests share (pytest.ini puts tests/ on the import path): the repository's location, files of the
music21 corpus, small inputs written on the spot, running a repository script the way a user does, and watching
the processes a stopped script leaves behind. The fixtures built on them (datasets, tiny trained runs) are in
conftest.py; no test module imports another.
"""
import contextlib
import io
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# tiny models train and decode fastest on one thread; two threads on two busy cores are 5x slower
ONE_THREAD = {"OMP_NUM_THREADS": "1"}
TINY_BLOCK_SIZE = 32

# ~300 tunes of two different collections: enough for every split to hold real tunes
FIXTURE_INPUTS = ["airdsAirs/book1.abc", "essenFolksong/ballad10.abc"]


def corpus_file(relative):
    """A file of the ABC corpus shipped inside music21 (the project's offline default data)."""
    import music21
    return Path(music21.__file__).parent / "corpus" / relative


def run_script(args, cwd=REPO, timeout=600, check=True, env=None):
    """run_script(['prepare.py', '--out', d]) -> CompletedProcess (stdout/stderr as text): a repository script run
    by this Python, with env added to the environment; AssertionError with its output when check and it fails."""
    proc = subprocess.run([sys.executable, *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def config_values(script, *argv):
    """The knobs of a script (its module) as config files and --key=value overrides in argv set them, read through
    the configurator as the script reads them (paths relative to the repository): tests take a config's values
    from here instead of copying them, so that retuning a config does not break them."""
    from music_scaling_laws.configurator import config_keys, configure
    with contextlib.chdir(REPO):
        return configure(config_keys(vars(script)), [str(a) for a in argv])


def study_runs(config, *argv):
    """[{name, config, overrides}]: the runs table of a study config (and overrides), as study.py parses it."""
    import study
    with contextlib.chdir(REPO):
        return study.parse_runs(config_values(study, config, *argv)["runs"])


def run_main(module, *args, cwd=REPO):
    """module.main(args) in this process, as `python module.py args` runs it in cwd: a CompletedProcess with its
    exit status and what it printed (a SystemExit("error: ...") of configurator.fail is the line on stderr and
    status 1, as Python prints it). For the scripts whose start-up (numpy, scipy, matplotlib: ~1 s) would cost more
    than their work; any other exception propagates, failing the test as a traceback would."""
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.chdir(cwd), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            module.main([str(a) for a in args])
        except SystemExit as e:
            if isinstance(e.code, str):
                print(e.code, file=sys.stderr)
            code = e.code if isinstance(e.code, int) else 1 if e.code is not None else 0
    return subprocess.CompletedProcess([module.__name__, *args], code, out.getvalue(), err.getvalue())


def study_dry_run(*argv):
    """study.py ARGV --dry_run=True run in this process, as `python study.py` runs it (from the repository): what
    it prints (the plan; plan.json holds it for reading). Without the interpreter's and torch's start-up of a
    subprocess (~3 s a dry run on 2 cores); a user mistake is study.py's SystemExit("error: ...")."""
    import study
    printed = io.StringIO()
    with contextlib.chdir(REPO), contextlib.redirect_stdout(printed):
        study.main([str(a) for a in argv] + ["--dry_run=True"])
    return printed.getvalue()


def tagged():
    """An environment tag: every process started with it, and all their descendants, carry it (see left_running)."""
    return {"MSL_TEST_TAG": uuid.uuid4().hex}


def left_running(tag, wait=5.0):
    """The pids of live processes (zombies aside) whose environment holds tag, after waiting up to `wait` seconds
    for them to end: what a stopped script left behind."""
    needle = f"MSL_TEST_TAG={tag['MSL_TEST_TAG']}".encode()
    deadline = time.time() + wait
    while True:
        pids = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/environ", "rb") as f:
                    if needle in f.read().split(b"\0"):
                        pids.append(int(pid))
            except OSError:  # gone meanwhile, or not ours
                pass
        if not pids or time.time() > deadline:
            return pids
        time.sleep(0.1)


def wait_for(condition, proc, timeout=120, poll=0.05):
    """Poll condition() every `poll` seconds until it holds; AssertionError if proc ends first or the time runs
    out."""
    deadline = time.time() + timeout
    while not condition():
        assert proc.poll() is None, f"ended early ({proc.returncode}): {proc.communicate()[1][-2000:]}"
        assert time.time() < deadline, "timed out waiting"
        time.sleep(poll)


def slow_tool(folder, name, marker):
    """A stand-in for the external program `name` in folder (put first on PATH) that records each call in the
    folder `marker` and then waits, as a conversion of a large file does: the moment to stop a script mid-work."""
    folder.mkdir(exist_ok=True)
    marker.mkdir(exist_ok=True)
    tool = folder / name
    tool.write_text(f"#!/bin/sh\nmktemp -p {marker} >/dev/null\nexec sleep 300\n")
    tool.chmod(0o755)
    return {"PATH": f"{folder}:{os.environ['PATH']}"}


def write_midi(path, pitches, start=0.0):
    """A one-instrument MIDI file of the pitches, half a second apart from `start` seconds on."""
    import pretty_midi
    pm = pretty_midi.PrettyMIDI(initial_tempo=120)
    piano = pretty_midi.Instrument(program=0)
    for i, p in enumerate(pitches):
        piano.notes.append(pretty_midi.Note(velocity=90, pitch=p, start=start + 0.5 * i, end=start + 0.5 * i + 0.45))
    pm.instruments.append(piano)
    pm.write(str(path))


def many_tunes(n):
    """n distinct, musical-looking tunes (different notes so none is a duplicate)."""
    notes = "CDEFGABcdefg"
    tunes = []
    for i in range(n):
        bars = "|".join(notes[(i + j) % 12] + notes[(3 * i + j) % 12] + notes[(i * j + 5) % 12] + "2" for j in range(12))
        tunes.append(f"X:{i + 1}\nT:tune {i}\nM:4/4\nL:1/8\nK:C\n{bars}|]\n")
    return tunes


# train.py on a tiny model, in this process (test_train, test_data_order, test_configurator, test_wsd)
# a tiny model and batch: 8 x 32 = 256 tokens per optimizer step
TINY = ["--n_layer=2", "--n_head=2", "--n_embd=32", "--block_size=32", "--batch_size=8", "--device=cpu",
        "--compile=False", "--dtype=float32", "--warmup_iters=5", "--learning_rate=3e-3", "--min_lr=3e-4",
        "--log_interval=5", "--eval_interval=10", "--eval_iters=4", "--ckpt_interval=0"]


def tiny_args(data, out, *extra):
    return [f"--data_dir={data}", f"--out_dir={out}", *TINY, *extra]


def run(data, out, *extra):
    """train.main in this process on a tiny GPT (TINY); returns results.json's dict."""
    import train
    results = train.main(tiny_args(data, out, *extra))
    with open(os.path.join(out, "results.json")) as f:
        assert json.load(f) == json.loads(json.dumps(results))
    return results


def read_log(out):
    with open(os.path.join(out, "log.jsonl")) as f:
        return [json.loads(line) for line in f]


def exit_message(excinfo):
    """The message of a sys.exit("error: ...") -- what the user sees on stderr -- or of a UserError, which a
    script's exit_on_user_error turns into that line."""
    message = excinfo.value.code if isinstance(excinfo.value, SystemExit) else f"error: {excinfo.value}"
    assert isinstance(message, str) and message.startswith("error: ") and "\n" not in message, message
    return message
