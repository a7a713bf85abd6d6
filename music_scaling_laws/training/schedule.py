"""
A run's plan through the data and its learning rate: how many optimizer steps its budget is in the window order
(dataset.iteration_plan), where a warmup-stable-decay trunk branches, and the rate at each step (cosine or wsd).
"""
import math
from types import SimpleNamespace

from music_scaling_laws.data.dataset import TrainOrder, iteration_plan, load_dataset
from music_scaling_laws.errors import UserError
from music_scaling_laws.training.settings import parse_budgets


def wsd_decay_start(total_iters, warmup_iters, cooldown_frac):
    """The first iteration of a wsd run's decay: the last cooldown_frac of its iterations (at least the last one),
    not inside the warm-up unless the run is that short. Everything before it is the same for every budget, which
    is what makes branching exact."""
    return min(total_iters - 1, max(warmup_iters, total_iters - max(1, round(cooldown_frac * total_iters))))


def branch_points(cfg, order):
    """A wsd trunk's ({iteration: [budgets whose cooldown starts there]}, the largest budget's iterations) in the
    window order of dataset.TrainOrder. Nothing of the order or the warm-up depends on the budget (step i reads
    windows [i*W, (i+1)*W) of an order seeded by data_seed alone), so nothing had to change there for branching."""
    branch_at, budget_iters = {}, 0
    for budget in parse_budgets(cfg["branch_budgets"]):
        budget_iters = iteration_plan(cfg["batch_size"], cfg["gradient_accumulation_steps"], budget, 0,
                                      order)["total_iters"]
        start = wsd_decay_start(budget_iters, cfg["warmup_iters"], cfg["cooldown_frac"])
        branch_at.setdefault(start, []).append(budget)
    if max(branch_at) == 0:
        raise UserError("every budget's cooldown starts at iteration 0: the trunk has nothing to train (lower cooldown_frac or "
             "raise warmup_iters)")
    return branch_at, budget_iters


def lr_at(it, total_iters, learning_rate, min_lr, warmup_iters, schedule="cosine", cooldown_frac=0.2):
    """Linear warmup over warmup_iters, then (cosine) cosine decay reaching min_lr at the last iteration, or (wsd)
    the constant learning_rate up to wsd_decay_start and a 1-sqrt decay reaching min_lr at the last iteration.
    Why 1-sqrt and not linear: Hagele et al. 2024 (Fig. 4, 5) measured it to beat a linear cooldown of the same
    length and to match or beat cosine at 20% cooldown; their 1-sqrt shape decays to 0, ours to min_lr like the
    cosine schedule, so that the two schedules differ only in their shape. The warm-up depends on warmup_iters
    alone, never on total_iters, so a trunk and every budget trained alone share it."""
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    if schedule == "wsd":
        start = wsd_decay_start(total_iters, warmup_iters, cooldown_frac)
        if it < start:
            return learning_rate
        ratio = min(1.0, (it - start) / max(1, total_iters - 1 - start))
        return min_lr + (1.0 - math.sqrt(ratio)) * (learning_rate - min_lr)
    decay_iters = max(1, total_iters - 1 - warmup_iters)
    ratio = min(1.0, (it - warmup_iters) / decay_iters)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (learning_rate - min_lr)


def load_plan(cfg, ckpt):
    """The dataset and the run's plan through it, or a one-line error where the data cannot hold the run or is not
    the checkpoint's (its fingerprint, its vocabulary). Returns (data, the window order, dataset.iteration_plan,
    branch_at: a wsd trunk's {iteration: the budgets whose cooldown starts there}, schedule_iters: the length lr_at
    plans the decay for; a trunk stops before its decay)."""
    c = SimpleNamespace(**cfg)
    data = load_dataset(c.data_dir)
    for split in ("train", "val"):
        if len(data.split(split)) < c.block_size + 1:
            raise UserError(f"block_size {c.block_size} is larger than the {split} split of {c.data_dir} "
                 f"({len(data.split(split))} tokens)")
    try:
        order = TrainOrder(data.split("train"), c.block_size, c.data_seed, c.data_order, data.eot_id)
        branch_at = {}
        if c.branch_budgets:
            branch_at, schedule_iters = branch_points(cfg, order)
            # the trunk follows the largest budget's schedule (the constant rate) and stops where its decay starts
            plan = iteration_plan(c.batch_size, c.gradient_accumulation_steps, 0, max(branch_at), order)
        else:
            plan = iteration_plan(c.batch_size, c.gradient_accumulation_steps, c.max_tokens, c.max_iters, order)
            schedule_iters = plan["total_iters"]
    except ValueError as e:
        raise UserError(f"{c.data_dir}: {e}")
    decay_start = wsd_decay_start(plan["total_iters"], c.warmup_iters, c.cooldown_frac)
    if c.init_from == "branch" and ckpt["iter_num"] != decay_start:
        raise UserError(f"the trunk's checkpoint for {c.max_tokens:.0f} tokens is at iteration {ckpt['iter_num']}, but this "
             f"run's cooldown starts at {decay_start}: the trunk was trained with other settings")
    fingerprint = data.fingerprints()["fingerprint"]
    if ckpt and ckpt["dataset"].get("fingerprint", fingerprint) != fingerprint:
        raise UserError(f"{c.data_dir} is not the dataset this run was trained on (its fingerprint differs); resume with "
             f"the same data")
    if ckpt and ckpt["model_args"]["vocab_size"] != data.vocab_size:
        raise UserError(f"checkpoint vocabulary ({ckpt['model_args']['vocab_size']} tokens) differs from the dataset's "
             f"({data.vocab_size} tokens in {c.data_dir}/meta.json)")
    return data, order, plan, branch_at, schedule_iters
