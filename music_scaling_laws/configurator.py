"""
nanoGPT's "poor man's configurator", made strict: the one way every script of the suite reads its settings.

    python train.py config/gpt_small.py --batch_size=16 --compile=False
    python sample.py --run out/gpt_tiny --num_samples 5 --midi        # --key value and bare flags work too
    python calc_perplexity.py out/gpt_tiny --split=val                # a script may take positional arguments

Arguments are read in order:
  - `name.py` (a plain argument ending in .py) is a config file: plain Python executed in order, whose
    assignments override the defaults;
  - `--key=value` or `--key value` overrides a default, the value read as a Python literal and checked
    against the default's type; a bool knob given alone (`--midi`) is set to True;
  - any other plain argument goes to the script's positional knob (for example the run folder of
    calc_perplexity.py); several are kept one per line, as are repeated `--key` of a repeatable knob.
A key that is not a default (a typo) or a value of the wrong type is a one-line error and a non-zero exit,
never a silent no-op. A knob that was renamed keeps its old name for one release: the script passes
renamed={old: new}, and the old name works with a one-line note on stderr.

Paths are read as a user types them: in every path knob (is_path_knob: out, run, input, table, ... and any
name ending in _dir, _path, _file, _input or _out) `~` and $VARS / ${VARS} are expanded, line by line, whether
the value came from a config file or the command line. The shell leaves `--dataset_input=~/lmd_full` alone
(it expands `~` only at the start of a word), so this is the place that makes it work. An unset variable
is a one-line error, not a folder literally named `$DATA`.

A script keeps every knob as a global near its top and does, in main:

    config = configure(globals(), argv)      # the final {key: value} of every knob; globals stay untouched
"""

import difflib
import os
import re
import sys
import types
from ast import literal_eval

from music_scaling_laws.errors import UserError

CONFIG_TYPES = (bool, int, float, str)
BOOL_WORDS = {"True": True, "False": False, "true": True, "false": False, "1": True, "0": False}


# knobs that hold paths (one per line for runs, inputs, input) besides the *_dir, *_path, ... names
PATH_KNOBS = ("out", "run", "runs", "input", "inputs", "table", "reference", "soundfont", "branch_from", "script")
PATH_SUFFIXES = ("_dir", "_path", "_file", "_input", "_out")
UNSET_VARIABLE = re.compile(r"\$(\w+|\{\w+\})")
KNOB_LINE = re.compile(r"^([a-z_][a-z0-9_]*)\s*=[^#]*?(?:#\s?(.*))?$")  # a top-level knob and its comment


def config_keys(namespace):
    """The knobs of a script: its public lower-case globals holding a bool, int, float or str (an upper-case
    name is a constant, not a setting)."""
    return {k: v for k, v in namespace.items()
            if not k.startswith("_") and not k.isupper() and type(v) in CONFIG_TYPES}


def coerce(key, value, default):
    """value as the type of default, or a UserError with one line saying why not."""
    want = type(default)
    if want is str:
        if isinstance(value, str):
            return value
        if isinstance(value, bool) and default == "auto":  # a knob of 'auto', True or False (train.py's compile)
            return str(value)
    elif want is bool:
        if isinstance(value, bool):
            return value
    elif want is int:
        # 2e6 is a convenient way to write a token budget; accept floats that are whole numbers
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif want is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    raise UserError(f"{key} must be {want.__name__} (default {default!r}), got {value!r}")


def parse_value(key, text, default):
    """The value of --key=text: a Python literal, or for string keys the text itself."""
    if isinstance(default, str):
        return text  # as typed: --out_dir=2024 is the string '2024', and a prompt keeps its quotes
    try:
        value = literal_eval(text)
    except (ValueError, SyntaxError):
        value = text
    return coerce(key, value, default)


def current_name(key, config, renamed, prefix="", where=""):
    """The knob a key names: itself, or the new name of a renamed knob (with a note that the old name goes)."""
    if key not in config and key in renamed:
        print(f"note: {where}{prefix}{key} is now {prefix}{renamed[key]}; the old name works until the next "
              f"release", file=sys.stderr)
        return renamed[key]
    return key


def run_config_file(path, config, renamed=None):
    """Execute a config file and apply its assignments to config (in place)."""
    if not os.path.isfile(path):
        raise UserError(f"config file {path} not found")
    namespace = {"__file__": os.path.abspath(path)}  # so a config can read a neighbour (config/study_lakh_timing.py)
    with open(path) as f:
        source = f.read()
    try:
        exec(compile(source, path, "exec"), namespace)
    except Exception as e:  # a broken config file is a user mistake: say where, not a traceback
        raise UserError(f"config file {path} failed: {type(e).__name__}: {e}")
    for key, value in namespace.items():
        if key.startswith("_") or isinstance(value, (types.ModuleType, types.FunctionType, type)):
            continue  # imports and helpers a config file may use
        key = current_name(key, config, renamed or {}, where=f"config file {path}: ")
        if key not in config:
            unknown_key(key, config, f"config file {path} sets unknown key", renamed)
        config[key] = coerce(key, value, config[key])


def is_path_knob(key):
    return key in PATH_KNOBS or key.endswith(PATH_SUFFIXES)


def expand_path(key, value):
    """value with `~` and environment variables expanded in each of its lines (a path knob's value)."""
    lines = []
    for line in value.split("\n"):
        expanded = os.path.expandvars(os.path.expanduser(line))
        unset = UNSET_VARIABLE.search(expanded)
        if unset:
            raise UserError(f"{key}={line}: the environment variable {unset.group(1).strip('{}')} is not set")
        lines.append(expanded)
    return "\n".join(lines)


def knob_comments(path):
    """{knob: its comment} from a script's source: the comment on the line that sets the knob at the top level,
    with the comment lines indented under it (how every script documents its knobs)."""
    comments, key = {}, None
    try:
        with open(path) as f:
            source = f.read().splitlines()
    except (OSError, TypeError, UnicodeDecodeError):
        return comments
    for line in source:
        m = KNOB_LINE.match(line)
        if m:
            key = m.group(1)
            if m.group(2):
                comments[key] = m.group(2).strip()
            continue
        more = re.match(r"^\s+#\s?(.*)$", line)
        if key in comments and more:
            comments[key] += " " + more.group(1).strip()
        else:
            key = None
    return comments


def usage(config, positional, script=None):
    head = "usage: [config_file.py ...]" + (f" [{positional.upper()} ...]" if positional else "")
    lines = [head + " [--key=value ...]; keys, defaults and what they do:"]
    comments = knob_comments(script) if script else {}
    for k, v in config.items():
        lines.append(f"  --{k}={v!r}" + (f"  # {comments[k]}" if k in comments else ""))
    return "\n".join(lines)


def unknown_key(key, config, where, renamed=None):
    """The one line for a key no knob has, with the nearest knob's name when the key looks like a typo of it (or of
    a knob's old name: then the new name)."""
    renamed = renamed or {}
    close = difflib.get_close_matches(key, list(config) + list(renamed), n=1, cutoff=0.75)
    close = [renamed.get(name, name) for name in close]
    raise UserError(f"{where} {key!r}" + (f"; did you mean {close[0]!r}?" if close else "") + " (see --help for the keys)")


def configure(namespace, argv, positional=None, repeatable=(), renamed=None):
    """Apply config files, positional arguments and --key overrides in argv to the knobs of namespace (a
    script's globals(), or any dict of defaults). positional names the str knob that plain arguments fill;
    repeatable names str knobs that may be given several times. Several values are joined one per line.
    renamed maps old knob names to new ones (accepted with a note). Returns the final {key: value}; namespace
    is not changed."""
    renamed = renamed or {}
    config = dict(config_keys(namespace))
    given = set()

    def assign(key, value):
        if key in given and key in repeatable + ((positional,) if positional else ()):
            config[key] += "\n" + value
        else:
            config[key] = value
        given.add(key)

    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg in ("-h", "--help"):
            # the script's own source holds the comments: its globals' __file__, or the script being run
            print(usage(config, positional, namespace.get("__file__") or sys.argv[0]))
            sys.exit(0)
        if not arg.startswith("--") or arg == "--":
            if arg.endswith(".py"):
                run_config_file(arg, config, renamed)
            elif positional:
                assign(positional, arg)
            else:
                raise UserError(f"unexpected argument {arg!r}: give config files (*.py) and --key=value options")
            continue
        key, sep, text = arg[2:].partition("=")
        key = current_name(key, config, renamed, prefix="--")
        if key not in config:
            unknown_key(key, config, "unknown config key", renamed)
        if not sep:
            if isinstance(config[key], bool):  # a bare flag, or --flag True/False
                if i < len(args) and args[i] in BOOL_WORDS:
                    config[key] = BOOL_WORDS[args[i]]
                    i += 1
                else:
                    config[key] = True
                continue
            if i >= len(args) or args[i].startswith("--") and args[i][2:].partition("=")[0] in config:
                raise UserError(f"--{key} needs a value")
            text = args[i]
            i += 1
        assign(key, parse_value(key, text, config[key]))
    for key, value in config.items():
        if isinstance(value, str) and value and is_path_knob(key):
            config[key] = expand_path(key, value)
    return config


def lines_of(value):
    """The entries of a one-per-line knob (positional, repeatable, or a table like study.py's runs)."""
    return [line.strip() for line in value.splitlines() if line.strip()]
