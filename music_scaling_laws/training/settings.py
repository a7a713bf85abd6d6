"""
train.py's rules about its settings, in one place for every reader: which settings shape a trained result (a resumed
run, a branch of a wsd trunk and a study's finished run must keep them), which a branch may change, and the checks
of a configuration that no single knob's type can say.
"""
from music_scaling_laws.errors import UserError

# keys that change the trained result; a resumed run must keep them, and a study warns when a finished run differs
RESUME_MUST_MATCH = ("model_type", "n_layer", "n_head", "n_embd", "dropout", "bias", "data_seed", "data_order",
                     "batch_size", "block_size", "gradient_accumulation_steps", "max_tokens", "max_iters",
                     "learning_rate", "min_lr", "warmup_iters", "weight_decay", "beta1", "beta2",
                     "grad_clip", "seed", "lr_schedule", "cooldown_frac", "branch_budgets")
# a branch keeps its trunk's RESUME_MUST_MATCH settings except these, which set its own budget
BRANCH_MAY_CHANGE = ("max_tokens", "max_iters", "branch_budgets")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")  # torch.compile's
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
