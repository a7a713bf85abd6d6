"""model.py: the shared interface of GPT and LSTM, incremental decoding, parameter counts of the
size configs, and checkpoint loading."""
import glob
import math
import os
from types import SimpleNamespace

import pytest
import torch
from torch.nn import functional as F

import train
from model import load_checkpoint
from music_scaling_laws.configurator import config_keys, configure
from model import GPT, LSTM, build_model, configure_optimizer, model_args_from_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VOCAB = 40


def tiny(model_type, **kw):
    torch.manual_seed(0)
    if model_type == "gpt":
        return GPT(**{**dict(vocab_size=VOCAB, block_size=16, n_layer=2, n_head=2, n_embd=32), **kw})
    return LSTM(**{**dict(vocab_size=VOCAB, block_size=16, n_layer=2, n_embd=32), **kw})


@pytest.mark.parametrize("model_type", ["gpt", "lstm"])
def test_forward_gives_logits_for_every_position_and_mean_cross_entropy(model_type):
    model = tiny(model_type)
    idx = torch.randint(0, VOCAB, (3, 16))
    targets = torch.randint(0, VOCAB, (3, 16))
    logits, loss = model(idx, targets)
    assert logits.shape == (3, 16, VOCAB)
    assert torch.allclose(loss, F.cross_entropy(logits.view(-1, VOCAB), targets.view(-1)))
    # -1 targets (padding) are ignored, not counted
    masked = targets.clone()
    masked[:, 8:] = -1
    _, loss_masked = model(idx, masked)
    assert torch.allclose(loss_masked, F.cross_entropy(logits[:, :8].reshape(-1, VOCAB), targets[:, :8].reshape(-1)))
    assert model(idx)[1] is None


@pytest.mark.parametrize("model_type", ["gpt", "lstm"])
def test_incremental_steps_reproduce_the_full_forward(model_type):
    model = tiny(model_type).eval()
    idx = torch.randint(0, VOCAB, (2, 16))
    with torch.no_grad():
        full, _ = model(idx)
        state = model.init_state(2, "cpu")
        pieces = []
        logits, state = model.step(idx[:, :5], state)  # a prompt prefill
        pieces.append(logits)
        for t in range(5, 16):                           # then one token at a time
            logits, state = model.step(idx[:, t:t + 1], state)
            pieces.append(logits)
    assert torch.allclose(torch.cat(pieces, dim=1), full, atol=1e-5)


def test_gpt_kv_cache_refuses_to_grow_past_block_size():
    model = tiny("gpt").eval()
    state = model.init_state(1, "cpu")
    with torch.no_grad():
        _, state = model.step(torch.zeros(1, 16, dtype=torch.long), state)
        with pytest.raises(ValueError, match="block_size"):
            model.step(torch.zeros(1, 1, dtype=torch.long), state)
        with pytest.raises(ValueError):
            model.step(torch.zeros(1, 17, dtype=torch.long), model.init_state(1, "cpu"))


def test_gpt_is_causal():
    model = tiny("gpt").eval()
    idx = torch.randint(0, VOCAB, (1, 16))
    changed = idx.clone()
    changed[0, 10] = (idx[0, 10] + 1) % VOCAB
    with torch.no_grad():
        a, _ = model(idx)
        b, _ = model(changed)
    assert torch.allclose(a[:, :10], b[:, :10])
    assert not torch.allclose(a[:, 10:], b[:, 10:])


def measured_flops_per_token(model, T):
    """Training FLOPs per token of one forward and backward pass over 2 x T tokens, as torch's FlopCounterMode
    counts them: every matrix product, with attention on its plain (math) kernel and the LSTM on oneDNN-free
    kernels, whose products the counter sees."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode
    idx = torch.randint(0, VOCAB, (2, T))
    counter = FlopCounterMode(display=False)
    with counter, sdpa_kernel(SDPBackend.MATH), torch.backends.mkldnn.flags(enabled=False):
        _, loss = model(idx, idx)
        loss.backward()
    return counter.get_total_flops() / (2 * T)


@pytest.mark.filterwarnings("ignore:TF32 acceleration on top of oneDNN")  # torch.backends.mkldnn.flags says it
def test_parameter_counts_and_flops():
    gpt = tiny("gpt", n_layer=3, n_embd=48, n_head=4)
    d, L, T = 48, 3, 16
    # per block: attention 4d^2+4d, MLP 8d^2+5d, two LayerNorms 4d; plus final LayerNorm 2d
    non_embedding = L * (12 * d * d + 13 * d) + 2 * d
    assert gpt.num_params(non_embedding=True) == non_embedding
    assert gpt.num_params() == non_embedding + VOCAB * d + T * d  # tied head counted once
    # the FLOPs the fits and MFU count are the FLOPs torch counts in a training step; the formula also counts 6
    # per bias and LayerNorm weight, which do no matrix product: at d=48 that is 2% over (less at real sizes)
    measured = measured_flops_per_token(gpt, T)
    assert measured <= gpt.flops_per_token() <= 1.03 * measured

    lstm = tiny("lstm", n_layer=3, n_embd=48)
    # per layer 4 gates x (input + recurrent weights + two biases); head bias; tied embedding
    non_embedding = 3 * 4 * (2 * d * d + 2 * d) + VOCAB
    assert lstm.num_params(non_embedding=True) == non_embedding
    assert lstm.num_params() == non_embedding + VOCAB * d
    measured = measured_flops_per_token(lstm, T)
    assert measured <= lstm.flops_per_token() <= 1.04 * measured


def test_weight_decay_applies_to_matrices_only():
    model = tiny("gpt")
    opt = configure_optimizer(model, 1e-3, 0.1, (0.9, 0.95), "cpu")
    decayed, plain = opt.param_groups
    assert decayed["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decayed["params"]) and all(p.dim() < 2 for p in plain["params"])
    assert len(decayed["params"]) + len(plain["params"]) == len(list(model.parameters()))


def config_model(path, vocab_size=100):
    """(config dict, model on the meta device) for a config file, as train.py would build it."""
    cfg = configure(config_keys(vars(train)), [path])
    with torch.device("meta"):  # no memory for the 700M-parameter model
        model = build_model(cfg["model_type"], **model_args_from_config(cfg, vocab_size))
    return cfg, model


# nominal sizes of the issue, as (low, high) parameter counts; char-level vocabularies are ~100
NOMINAL = {"tiny": (0.9e6, 1.2e6), "small": (4e6, 6e6), "medium": (17e6, 24e6), "large": (42e6, 58e6),
           "xl": (100e6, 150e6), "xxl": (600e6, 800e6)}
# every model config (config/<family>_<size>.py): a new one is covered without editing this file
SIZE_CONFIGS = sorted(glob.glob(os.path.join(REPO, "config", "gpt_*.py")) +
                      glob.glob(os.path.join(REPO, "config", "lstm_*.py")))


@pytest.mark.parametrize("path", SIZE_CONFIGS, ids=os.path.basename)
def test_config_parameter_counts_match_their_names(path):
    """A gpt_<size> config has the nominal parameter count of its size; an lstm_<size> one has within 15% of its
    gpt_<size> twin's (the two families are compared at equal sizes)."""
    family, size = os.path.basename(path)[:-len(".py")].split("_", 1)
    assert size in NOMINAL, f"{path}: size {size!r} has no nominal parameter count here (NOMINAL)"
    gpt_path = os.path.join(REPO, "config", f"gpt_{size}.py")
    assert os.path.isfile(gpt_path), f"{path} has no gpt twin {gpt_path} to be compared with"
    cfg, model = config_model(path)
    assert cfg["model_type"] == family
    gpt = config_model(gpt_path)[1]
    low, high = NOMINAL[size]
    assert low <= gpt.num_params() <= high, f"gpt_{size} has {gpt.num_params():,} parameters"
    assert abs(model.num_params() / gpt.num_params() - 1) <= 0.15, \
        f"{family}_{size} {model.num_params():,} vs gpt_{size} {gpt.num_params():,}"


def test_every_config_has_the_same_tokens_per_step_and_block_size():
    assert {os.path.basename(p).split("_")[0] for p in SIZE_CONFIGS} == {"gpt", "lstm"}  # the glob finds both
    shapes = set()
    for path in SIZE_CONFIGS:
        cfg = configure(config_keys(vars(train)), [path])
        shapes.add((cfg["batch_size"] * cfg["gradient_accumulation_steps"], cfg["block_size"]))
    assert len(shapes) == 1, shapes


@pytest.mark.parametrize("model_type", ["gpt", "lstm"])
def test_load_checkpoint_restores_the_model_in_eval_mode(model_type, tmp_path):
    model = tiny(model_type)
    torch.save({"model_type": model_type, "model_args": model.model_args(), "model": model.state_dict(),
                "config": {"data_dir": "x", "block_size": 16}, "iter_num": 0, "tokens_seen": 0},
               tmp_path / "ckpt.pt")
    loaded, ckpt = load_checkpoint(str(tmp_path))  # a run folder works as well as the file
    assert not loaded.training and type(loaded) is type(model)
    assert loaded.config.block_size == 16 and ckpt["config"]["data_dir"] == "x"
    idx = torch.randint(0, VOCAB, (2, 16))
    model.eval()
    with torch.no_grad():
        assert torch.equal(loaded(idx)[0], model(idx)[0])


def test_untrained_models_start_near_uniform_loss():
    # a sanity check on initialisation: far from uniform means exploding logits
    for model_type in ("gpt", "lstm"):
        model = tiny(model_type)
        idx = torch.randint(0, VOCAB, (4, 16))
        _, loss = model(idx, torch.randint(0, VOCAB, (4, 16)))
        assert abs(loss.item() - math.log(VOCAB)) < 0.5


def one_step(grad_checkpoint):
    """(loss, {name: gradient}, block forward calls, bytes autograd saved for backward outside checkpointed blocks) of
    one forward and backward of a tiny GPT as train.py builds it (its knobs, train.build), with dropout on."""
    cfg = configure(config_keys(vars(train)), ["--n_layer=3", "--n_head=2", "--n_embd=32", "--block_size=16",
                                               "--dropout=0.1", f"--grad_checkpoint={grad_checkpoint}"])
    c = SimpleNamespace(**cfg)
    model = train.build(c, model_args_from_config(cfg, VOCAB), "cpu", "float32")[0]
    assert model.training
    calls = []  # the blocks' forward passes (a recomputation in backward runs forward but no forward hooks)
    for block in model.transformer.h:
        block.forward = (lambda forward: lambda *a: calls.append(1) or forward(*a))(block.forward)
    saved = []

    def pack(t):
        saved.append(t.numel() * t.element_size())
        return t

    g = torch.Generator().manual_seed(1)
    idx, targets = torch.randint(0, VOCAB, (4, 16), generator=g), torch.randint(0, VOCAB, (4, 16), generator=g)
    torch.manual_seed(2)  # the same dropout masks for both models
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        _, loss = model(idx, targets)
    loss.backward()
    return loss.item(), {n: p.grad for n, p in model.named_parameters()}, len(calls), sum(saved)


def test_grad_checkpoint_recomputes_each_block_and_gives_the_same_gradients():
    """train.py --grad_checkpoint=True keeps less for backward and recomputes every block there (their dropout masks
    too), and the loss and every gradient are those of the model without it."""
    loss, grads, calls, saved = one_step(False)
    loss_ckpt, grads_ckpt, calls_ckpt, saved_ckpt = one_step(True)
    assert loss_ckpt == loss
    assert grads_ckpt.keys() == grads.keys() and all(g is not None for g in grads.values())
    for name in grads:
        assert torch.allclose(grads_ckpt[name], grads[name], rtol=1e-5, atol=1e-7), name
    # without it each of the 3 blocks runs once; with it a second time in backward, so nothing inside the blocks
    # had to be kept: less than half the bytes
    assert (calls, calls_ckpt) == (3, 6)
    assert saved_ckpt < saved / 2, (saved_ckpt, saved)
