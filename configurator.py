"""
nanoGPT's "poor man's configurator", made strict.

    python train.py config/gpt_small.py --batch_size=16 --compile=False

Arguments without "--" are config files: plain Python executed in order, whose assignments
override the defaults. Then every --key=value overrides a default, the value read as a Python
literal and checked against the default's type. A key that is not a default (a typo) or a value
of the wrong type is a one-line error and a non-zero exit, never a silent no-op.

A script keeps every knob as a global near its top and does:

    from configurator import configure
    config = configure(globals(), sys.argv[1:])   # the final {key: value} of every knob
    globals().update(config)
"""

import os
import sys
import types
from ast import literal_eval

CONFIG_TYPES = (bool, int, float, str)


def config_keys(namespace):
    """The knobs of a script: its public globals holding a bool, int, float or str."""
    return {k: v for k, v in namespace.items()
            if not k.startswith("_") and type(v) in CONFIG_TYPES}


def coerce(key, value, default):
    """value as the type of default, or SystemExit with one line saying why not."""
    want = type(default)
    if want is str:
        if isinstance(value, str):
            return value
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
    sys.exit(f"error: {key} must be {want.__name__} (default {default!r}), got {value!r}")


def parse_value(key, text, default):
    """The value of --key=text: a Python literal, or for string keys the text itself."""
    try:
        value = literal_eval(text)
    except (ValueError, SyntaxError):
        value = text
    if isinstance(default, str) and not isinstance(value, str):
        value = text  # --out_dir=2024 means the string '2024'
    return coerce(key, value, default)


def run_config_file(path, config):
    """Execute a config file and apply its assignments to config (in place)."""
    if not os.path.isfile(path):
        sys.exit(f"error: config file {path} not found")
    namespace = {}
    with open(path) as f:
        source = f.read()
    try:
        exec(compile(source, path, "exec"), namespace)
    except Exception as e:  # a broken config file is a user mistake: say where, not a traceback
        sys.exit(f"error: config file {path} failed: {type(e).__name__}: {e}")
    for key, value in namespace.items():
        if key.startswith("_") or isinstance(value, (types.ModuleType, types.FunctionType, type)):
            continue  # imports and helpers a config file may use
        if key not in config:
            sys.exit(f"error: config file {path} sets unknown key {key!r}")
        config[key] = coerce(key, value, config[key])


def usage(config):
    lines = ["usage: [config_file.py ...] [--key=value ...]; keys and defaults:"]
    lines += [f"  --{k}={v!r}" for k, v in config.items()]
    return "\n".join(lines)


def configure(namespace, argv):
    """Apply config files and --key=value overrides in argv to the knobs of namespace (a script's
    globals(), or any dict of defaults). Returns the final {key: value}; namespace is not changed."""
    config = dict(config_keys(namespace))
    for arg in argv:
        if arg in ("-h", "--help"):
            print(usage(config))
            sys.exit(0)
        if not arg.startswith("--"):
            run_config_file(arg, config)
            continue
        key, sep, text = arg[2:].partition("=")
        if not sep:
            sys.exit(f"error: expected --key=value, got {arg!r}")
        if key not in config:
            sys.exit(f"error: unknown config key {key!r} (see --help for the keys)")
        config[key] = parse_value(key, text, config[key])
    return config
