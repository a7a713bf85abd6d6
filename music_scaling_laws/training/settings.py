"""
train.py's rules about its settings, in one place for every reader: which settings shape a trained result (a resumed
run, a branch of a wsd trunk and a study's finished run must keep them), which a branch may change, and the checks
of a configuration that no single knob's type can say.
"""
import os

from music_scaling_laws import run_files
from music_scaling_laws.configurator import configure
from music_scaling_laws.errors import UserError

# keys that change the trained result; a resumed run must keep them, and a study warns when a finished run differs
RESUME_MUST_MATCH = ("model_type", "n_layer", "n_head", "n_embd", "dropout", "bias", "data_seed", "data_order",
                     "batch_size", "block_size", "gradient_accumulation_steps", "max_tokens", "max_iters",
                     "learning_rate", "min_lr", "warmup_iters", "weight_decay", "beta1", "beta2",
                     "grad_clip", "seed", "lr_schedule", "cooldown_frac", "branch_budgets")
# a branch keeps its trunk's RESUME_MUST_MATCH settings except these, which set its own budget
BRANCH_MAY_CHANGE = ("max_tokens", "max_iters", "branch_budgets")
RUN_ROLES = ("run", "sweep", "seed_repeat")  # what a run can be told it is (train.py's run_role); trunk and branch it knows
COMPILE_MODES = ("auto", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")  # torch.compile's
# (auto: hardware.choose_compile_mode)
# (knob, smallest allowed value); checked where the configuration is read
AT_LEAST = (("batch_size", 1), ("block_size", 1), ("gradient_accumulation_steps", 1), ("n_layer", 1),
            ("n_head", 1), ("n_embd", 1), ("log_interval", 1), ("eval_iters", 1), ("eval_interval", 0),
            ("ckpt_interval", 0), ("ckpt_interval_s", 0), ("max_tokens", 0), ("max_iters", 0), ("warmup_iters", 0),
            ("learning_rate", 0), ("min_lr", 0), ("weight_decay", 0), ("grad_clip", 0), ("peak_flops", 0))


def changed_settings(trained, now, may_change=()):
    """['key: trained -> now', ...] for each setting of RESUME_MUST_MATCH (less may_change) that both configs hold
    and that differs. cooldown_frac counts only where a schedule is wsd: a cosine run never reads it, so changing
    it leaves cosine runs the same runs."""
    keys = [k for k in RESUME_MUST_MATCH if k not in may_change and k in trained and k in now and trained[k] != now[k]]
    if "cooldown_frac" in keys and trained.get("lr_schedule", "cosine") == now.get("lr_schedule") == "cosine":
        keys.remove("cooldown_frac")
    show = lambda v: f"{v:g}" if isinstance(v, float) else repr(v)  # noqa: E731 (1e-3, not 0.001)
    return [f"{k}: {show(trained[k])} -> {show(now[k])}" for k in keys]


def parse_budgets(text):
    """'5e5,1e6,2e6' -> [500000, 1000000, 2000000] (sorted, whole tokens), or a UserError."""
    try:
        budgets = sorted({int(float(b)) for b in str(text).split(",") if b.strip()})
    except ValueError:
        budgets = []
    if not budgets or budgets[0] <= 0:
        raise UserError(f"branch_budgets must be positive token counts separated by commas, e.g. '5e5,1e6,2e6', got "
                        f"{text!r}")
    return budgets


def read_config(base, argv, model_types):
    """The run's config from base (train.py's knobs with their defaults), config files and --key=value in argv; on
    resume the checkpoint's config is the default and the settings that shape the result must not change, and a
    branch takes its trunk's. model_types: the model families there are. Returns (config, checkpoint or None)."""
    # torch's modules here, not at the top: the rules above are read by a study's process and report without torch
    from music_scaling_laws.training.checkpoint import read_checkpoint
    from music_scaling_laws.training.hardware import check_compile
    cfg = configure(base, argv)
    ckpt = None
    if cfg["init_from"] == "resume":
        path = run_files.ckpt_path(cfg["out_dir"])
        if not os.path.isfile(path):
            raise UserError(f"init_from=resume but {path} does not exist")
        ckpt = read_checkpoint(path)
        # `--out_dir=X --init_from=resume` is enough; what the command line sets again must agree
        # a checkpoint from before data_order existed was trained in stride order, whatever today's default
        saved = {"data_order": "stride", **{k: v for k, v in ckpt["config"].items() if k in base}}
        if isinstance(saved.get("compile"), bool):  # from before compile='auto', when True meant on CUDA only
            saved["compile"] = "auto" if saved["compile"] else "False"
        cfg = configure({**base, **saved, "init_from": "resume"}, argv)
        changed = changed_settings(saved, cfg, ())
        if changed:
            raise UserError(f"resume must keep the run's settings, but these changed: {'; '.join(changed)}")
    elif cfg["init_from"] == "branch":
        # the trunk's settings are the defaults of a branch: --branch_from, --max_tokens and --out_dir are enough
        trunk = cfg["branch_from"]
        if not trunk or not os.path.isdir(trunk):
            raise UserError(f"init_from=branch needs --branch_from=TRUNK_OUT_DIR (a run trained with --branch_budgets), got "
                 f"{trunk!r}")
        path = run_files.branch_checkpoint_path(trunk, cfg["max_tokens"])
        if not os.path.isfile(path):
            have = sorted(f for f in os.listdir(trunk) if run_files.is_branch_checkpoint(f))
            raise UserError(f"{path} not found: --max_tokens must be one of the budgets the trunk has reached "
                 f"({', '.join(have) or 'none yet'})")
        ckpt = read_checkpoint(path)
        saved = {k: v for k, v in ckpt["config"].items() if k in base and k not in ("out_dir", *BRANCH_MAY_CHANGE)}
        cfg = configure({**base, **saved, "init_from": "branch", "branch_from": trunk}, argv)
        changed = changed_settings(ckpt["config"], cfg, BRANCH_MAY_CHANGE)
        if changed:
            raise UserError(f"a branch must keep its trunk's settings, but these changed: {'; '.join(changed)}")
        if cfg["branch_budgets"] or cfg["max_iters"]:
            raise UserError("a branch trains one budget: set --max_tokens (one of the trunk's branch_budgets), not "
                 "branch_budgets or max_iters")
        if os.path.abspath(cfg["out_dir"]) == os.path.abspath(trunk):
            raise UserError(f"a branch writes into its own out_dir, not into its trunk {trunk}")
    if cfg["init_from"] not in ("scratch", "resume", "branch"):
        raise UserError(f"init_from must be 'scratch', 'resume' or 'branch', got {cfg['init_from']!r}")
    if cfg["run_role"] not in RUN_ROLES:
        raise UserError(f"run_role must be one of {', '.join(RUN_ROLES)}, got {cfg['run_role']!r}")
    if cfg["lr_schedule"] not in ("cosine", "wsd"):
        raise UserError(f"lr_schedule must be 'cosine' or 'wsd', got {cfg['lr_schedule']!r}")
    if not 0 < cfg["cooldown_frac"] <= 1:
        raise UserError(f"cooldown_frac must be in (0, 1], got {cfg['cooldown_frac']}")
    if cfg["branch_budgets"]:
        budgets = parse_budgets(cfg["branch_budgets"])
        if cfg["lr_schedule"] != "wsd" or cfg["max_tokens"] or cfg["max_iters"]:
            raise UserError("branch_budgets trains a wsd trunk whose length the budgets set: use --lr_schedule=wsd and leave "
                 "max_tokens and max_iters at 0")
        cfg["branch_budgets"] = ",".join(str(b) for b in budgets)  # one spelling, so that a resume compares equal
    if cfg["model_type"] not in model_types:
        raise UserError(f"model_type must be one of {sorted(model_types)}, got {cfg['model_type']!r}")
    for key, least in AT_LEAST:
        if not cfg[key] >= least:  # also catches nan
            raise UserError(f"{key} must be at least {least}, got {cfg[key]}")
    check_compile(cfg["compile"])
    if not 0 <= cfg["dropout"] < 1:
        raise UserError(f"dropout must be in [0, 1), got {cfg['dropout']}")
    if cfg["compile_mode"] not in COMPILE_MODES:  # checked on every device, not only where compile is used
        raise UserError(f"compile_mode must be one of {', '.join(COMPILE_MODES)}, got {cfg['compile_mode']!r}")
    if cfg["model_type"] == "gpt" and cfg["n_embd"] % cfg["n_head"]:
        raise UserError(f"n_embd={cfg['n_embd']} must be a multiple of n_head={cfg['n_head']}")
    return cfg, ckpt
