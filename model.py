"""
The two model families of the scaling study, behind one interface.

GPT: decoder-only transformer in the GPT-2 style (learned positions, pre-LayerNorm, GELU MLP,
causal attention through F.scaled_dot_product_attention so CUDA picks flash kernels, input and
output embeddings tied). LSTM: embedding -> n-layer nn.LSTM (cuDNN on CUDA) -> dropout -> linear
head tied to the embedding.

Both share:
  forward(idx, targets=None) -> (logits for ALL positions (B, T, vocab), mean cross-entropy or None)
  num_params(non_embedding=False), flops_per_token(), config.block_size,
  init_state(batch_size, device) -> state, step(idx, state) -> (logits, state),   # incremental decoding,
  reset_rows(state, rows, idx), select_rows(state, rows) -> state                 # rows independent
  (GPT: init_state(..., static=True) and step_tensors, the fixed-shape step sample.py captures as a CUDA graph)
plus configure_optimizer(model, ...) used by train.py and bench.py and load_run / load_checkpoint, which read a trained run back.
"""

import math
import os
from dataclasses import dataclass, asdict

import torch
import torch.nn as nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint as activation_checkpoint

from music_scaling_laws.data.dataset import load_dataset
from music_scaling_laws.errors import UserError
from music_scaling_laws.run_files import ckpt_path
from music_scaling_laws.training.checkpoint import read_checkpoint


# -----------------------------------------------------------------------------
# GPT

@dataclass
class GPTConfig:
    block_size: int = 256
    vocab_size: int = 100
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = True             # GPT-2 has biases in Linear and LayerNorm
    grad_checkpoint: bool = False  # recompute each block in backward: less memory, ~30% more compute


class CausalSelfAttention(nn.Module):

    def __init__(self, config):
        super().__init__()
        assert config.n_embd % config.n_head == 0, "n_embd must be a multiple of n_head"
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.dropout = config.dropout
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)

    def _heads(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        # (B, T, C) -> (B, nh, T, hs)
        return [t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v)]

    def _merge(self, y):
        B, nh, T, hs = y.size()
        return self.resid_dropout(self.c_proj(y.transpose(1, 2).contiguous().view(B, T, nh * hs)))

    def forward(self, x):
        q, k, v = self._heads(x)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0,
                                           is_causal=True)
        return self._merge(y)

    def step(self, x, k_cache, v_cache, positions, mask):
        """Attend the t new tokens x (B, t, C), at per-row positions (B, t), to the cache after writing their
        keys/values into it; mask (B, 1, t, width) says which of the first width cached positions each sees."""
        q, k, v = self._heads(x)
        index = positions[:, None, :, None].expand_as(k)
        k_cache.scatter_(2, index, k)
        v_cache.scatter_(2, index, v)
        width = mask.size(-1)  # the cache up to the furthest row's position, no further
        y = F.scaled_dot_product_attention(q, k_cache[:, :, :width], v_cache[:, :, :width], attn_mask=mask)
        return self._merge(y)


class MLP(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):

    def __init__(self, config):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))

    def step(self, x, k_cache, v_cache, positions, mask):
        x = x + self.attn.step(self.ln_1(x), k_cache, v_cache, positions, mask)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    model_type = "gpt"

    def __init__(self, **kwargs):
        super().__init__()
        self.config = config = GPTConfig(**kwargs)
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.n_embd),
            wpe=nn.Embedding(config.block_size, config.n_embd),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # weight tying
        self.apply(self._init_weights)
        # GPT-2: scale the residual projections by 1/sqrt(2 * n_layer) so the residual stream
        # does not grow with depth
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def model_args(self):
        return asdict(self.config)

    def num_params(self, non_embedding=False):
        """Parameters (the tied embedding/head counted once). non_embedding drops the token and
        position embeddings, the count Kaplan et al. fit scaling laws to."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.transformer.wte.weight.numel() + self.transformer.wpe.weight.numel()
        return n

    def flops_per_token(self):
        """Training FLOPs (forward + backward) per token, PaLM appendix B convention as in nanoGPT:
        6 per weight that takes part in a matmul (the tied head does, the position table does not)
        plus 12 * n_layer * n_embd * block_size for the attention scores and weighted sum."""
        c = self.config
        n = self.num_params() - self.transformer.wpe.weight.numel()
        return 6 * n + 12 * c.n_layer * c.n_embd * c.block_size

    def forward(self, idx, targets=None):
        B, T = idx.size()
        if T > self.config.block_size:
            raise ValueError(f"sequence of length {T} exceeds block_size {self.config.block_size}")
        pos = torch.arange(T, dtype=torch.long, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for block in self.transformer.h:
            if self.config.grad_checkpoint and self.training and torch.is_grad_enabled():
                x = activation_checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        logits = self.lm_head(self.transformer.ln_f(x))
        return logits, _loss(logits, targets)

    # incremental decoding: state = {"k", "v": per layer (B, nh, block_size, hs) caches preallocated once,
    # "pos": (B,) positions cached per row, "filled": the same as host ints (checked without waiting for the device),
    # "static": attend over the whole cache at every step (fixed shapes, what a CUDA graph replays) instead of
    # the cache up to the furthest row's position}. Rows are independent: each goes on at its own position, and
    # reset_rows restarts some of them.
    def init_state(self, batch_size, device, static=False):
        c = self.config
        param = self.transformer.wte.weight
        shape = (batch_size, c.n_head, c.block_size, c.n_embd // c.n_head)
        return {
            "k": [torch.zeros(shape, dtype=param.dtype, device=device) for _ in range(c.n_layer)],
            "v": [torch.zeros(shape, dtype=param.dtype, device=device) for _ in range(c.n_layer)],
            "pos": torch.zeros(batch_size, dtype=torch.long, device=device),
            "filled": [0] * batch_size,
            "static": static,
        }

    def step(self, idx, state):
        """Logits (B, t, vocab) after each of t new tokens per row, each row going on from its own position."""
        t = idx.size(1)
        width = max(state["filled"], default=0) + t  # the furthest row's end
        if width > self.config.block_size:
            raise ValueError(f"KV cache full: {width - t} cached + {t} new positions > block_size "
                             f"{self.config.block_size}; re-prefill the last tokens into a fresh state (reset_rows)")
        logits = self.step_tensors(idx, state, self.config.block_size if state.get("static") else width)
        state["filled"] = [n + t for n in state["filled"]]
        return logits, state

    def step_tensors(self, idx, state, width):
        """The device's part of step, which reads nothing back to the host: attend over the first width cached
        positions (masked per row beyond its own). With width = block_size every tensor has the same shape at every
        token, so the step can be captured once as a CUDA graph (hardware.StepGraph) and replayed; the host's
        "filled" is the caller's to update."""
        t = idx.size(1)
        positions = state["pos"][:, None] + torch.arange(t, device=idx.device)
        # a new token sees the cached positions up to its own; a reset row's stale entries lie beyond it
        mask = positions[:, None, :, None] >= torch.arange(width, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(positions))
        for block, k_cache, v_cache in zip(self.transformer.h, state["k"], state["v"]):
            x = block.step(x, k_cache, v_cache, positions, mask)
        state["pos"] += t
        return self.lm_head(self.transformer.ln_f(x))

    def reset_rows(self, state, rows, idx):
        """Restart the rows (host ints) of state from an empty cache on idx (len(rows), t), t >= 0."""
        index = to_device(rows, idx.device)
        fresh = self.init_state(len(rows), idx.device)
        if idx.size(1):
            self.step(idx, fresh)
        for cache, part in zip(state["k"] + state["v"], fresh["k"] + fresh["v"]):
            cache.index_copy_(0, index, part)
        state["pos"].index_fill_(0, index, idx.size(1))
        for row in rows:
            state["filled"][row] = idx.size(1)

    def select_rows(self, state, rows):
        """The state of only the rows (host ints), in that order."""
        index = to_device(rows, state["pos"].device)
        return {"k": [k[index] for k in state["k"]], "v": [v[index] for v in state["v"]],
                "pos": state["pos"][index], "filled": [state["filled"][row] for row in rows],
                "static": state.get("static", False)}


# -----------------------------------------------------------------------------
# LSTM

@dataclass
class LSTMConfig:
    block_size: int = 256   # the training context; the recurrence itself has no limit
    vocab_size: int = 100
    n_layer: int = 2
    n_embd: int = 256       # embedding width = hidden width, so the head can be tied
    dropout: float = 0.0


class LSTM(nn.Module):
    model_type = "lstm"

    def __init__(self, **kwargs):
        super().__init__()
        self.config = config = LSTMConfig(**kwargs)
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.lstm = nn.LSTM(config.n_embd, config.n_embd, num_layers=config.n_layer, batch_first=True,
                            dropout=config.dropout if config.n_layer > 1 else 0.0)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=True)
        self.lm_head.weight = self.wte.weight  # weight tying (Press & Wolf 2017)
        # unit-scale embeddings (nn.Embedding's default N(0, 1)): the classic U(-0.1, 0.1) feeds the
        # first layer inputs so small that a 3-layer stack sits on the unigram plateau for hundreds
        # of steps (measured on data/music21: loss 3.2 after 80 steps vs 2.2 after 35 with N(0, 1))
        nn.init.normal_(self.wte.weight, mean=0.0, std=1.0)
        nn.init.zeros_(self.lm_head.bias)
        # forget-gate bias 1 (Jozefowicz et al. 2015) so early gradients flow through time;
        # PyTorch keeps two bias vectors (ih, hh) of gate order i, f, g, o
        n = config.n_embd
        for name, p in self.lstm.named_parameters():
            if name.startswith("bias_ih"):
                with torch.no_grad():
                    p[n:2 * n].fill_(1.0)

    def model_args(self):
        return asdict(self.config)

    def num_params(self, non_embedding=False):
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.wte.weight.numel()
        return n

    def flops_per_token(self):
        """Training FLOPs per token: 6 per matmul weight (all LSTM matrices and the tied head);
        the gate nonlinearities are negligible."""
        return 6 * self.num_params()

    def _run(self, idx, state):
        x = self.drop(self.wte(idx))
        if x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            # oneDNN has no bf16 LSTM kernel: run the recurrence in fp32 on CPU
            with torch.autocast("cpu", enabled=False):
                y, state = self.lstm(x.float(), state)
        else:
            y, state = self.lstm(x, state)
        return self.lm_head(self.drop(y)), state

    def forward(self, idx, targets=None):
        logits, _ = self._run(idx, None)
        return logits, _loss(logits, targets)

    # incremental decoding: state = (h, c), each (n_layer, B, n_embd)
    def init_state(self, batch_size, device):
        c = self.config
        param = self.wte.weight
        zeros = torch.zeros(c.n_layer, batch_size, c.n_embd, dtype=param.dtype, device=device)
        return (zeros, zeros.clone())

    def step(self, idx, state):
        return self._run(idx, state)

    def reset_rows(self, state, rows, idx):
        """Restart the rows (host ints) of state from a zero state on idx (len(rows), t), t >= 0."""
        index = to_device(rows, idx.device)
        fresh = self.init_state(len(rows), idx.device)
        if idx.size(1):
            _, fresh = self._run(idx, fresh)
        for old, new in zip(state, fresh):
            old.index_copy_(1, index, new)

    def select_rows(self, state, rows):
        """The state of only the rows (host ints), in that order."""
        index = to_device(rows, state[0].device)
        return tuple(s[:, index] for s in state)


# -----------------------------------------------------------------------------
# shared helpers

MODEL_CLASSES = {"gpt": GPT, "lstm": LSTM}


def to_device(data, device):
    """Host data (a tensor, or ints as a LongTensor) on device, without making the host wait for the device
    (a copy from pinned memory), so that decoding can plan rows on the host while the device works."""
    data = data if isinstance(data, torch.Tensor) else torch.tensor(data, dtype=torch.long)
    if torch.device(device).type == "cuda":
        return data.pin_memory().to(device, non_blocking=True)
    return data.to(device)


def _loss(logits, targets):
    if targets is None:
        return None
    return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)


def build_model(model_type, **model_args):
    if model_type not in MODEL_CLASSES:
        raise ValueError(f"unknown model_type {model_type!r}; expected one of {sorted(MODEL_CLASSES)}")
    return MODEL_CLASSES[model_type](**model_args)


def model_args_from_config(config, vocab_size):
    """The constructor kwargs of config['model_type'] taken from a flat training config."""
    model_type = config["model_type"]
    if model_type not in MODEL_CLASSES:
        raise ValueError(f"unknown model_type {model_type!r}; expected one of {sorted(MODEL_CLASSES)}")
    fields = (GPTConfig if model_type == "gpt" else LSTMConfig).__dataclass_fields__
    args = {k: config[k] for k in fields if k in config}
    args["vocab_size"] = vocab_size
    return args


def configure_optimizer(model, learning_rate, weight_decay, betas, device_type):
    """AdamW with weight decay on matrices only (not on biases, LayerNorm gains); fused on CUDA."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    extra = {"fused": True} if device_type == "cuda" else {}
    return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, **extra)


# -----------------------------------------------------------------------------
# a trained run read back (nanoGPT's from_pretrained): the model of a ckpt.pt with the tokenizer of its data

def model_from_checkpoint(ckpt, device="cpu"):
    """The checkpoint's model, with its weights, on device and in eval mode."""
    model = build_model(ckpt["model_type"], **ckpt["model_args"])
    # a state dict saved from a torch.compile'd module carries this prefix
    model.load_state_dict({k.removeprefix("_orig_mod."): v for k, v in ckpt["model"].items()})
    return model.to(device).eval()


def load_checkpoint(path, device="cpu"):
    """(model in eval mode, checkpoint dict) from a run folder or a ckpt.pt file."""
    if os.path.isdir(path):
        path = ckpt_path(path)
    ckpt = read_checkpoint(path)  # to the CPU: only the weights go to device, not the optimizer's moments
    return model_from_checkpoint(ckpt, device), ckpt


def recorded_data_dir(ckpt, run_dir):
    """The dataset a run recorded (its config's data_dir), or, where that is gone and the run folder has moved (a
    study folder copied elsewhere, its dataset inside it), the same dataset at the same place relative to the run as
    when it trained: a study's runs/NAME and its data/ move together."""
    config = ckpt.get("config", {})
    recorded, trained_in = config.get("data_dir"), config.get("out_dir")
    if not recorded or os.path.isdir(recorded) or not trained_in:
        return recorded
    moved = os.path.normpath(os.path.join(run_dir, os.path.relpath(os.path.abspath(recorded),
                                                                   os.path.abspath(trained_in))))
    return moved if os.path.isdir(moved) else recorded


def load_run(run, device, data_dir=""):
    """(model in eval mode, checkpoint dict, tokenizer, data_dir) for a run folder or its ckpt.pt; the
    tokenizer comes from data_dir, or the dataset the run recorded, and must match the model."""
    path = ckpt_path(run) if os.path.isdir(run) else run
    if not os.path.isfile(path):
        raise UserError(f"no checkpoint at {path} (give a run folder holding ckpt.pt, or the ckpt.pt itself)")
    ckpt = read_checkpoint(path)  # to the CPU: only the weights go to device, not the optimizer's moments
    model = model_from_checkpoint(ckpt, device)
    data_dir = data_dir or recorded_data_dir(ckpt, os.path.dirname(os.path.abspath(path)))
    if not data_dir:
        raise UserError(f"{path} does not record its data_dir; pass --data_dir")
    if not os.path.isdir(data_dir):
        raise UserError(f"the run's dataset {data_dir} is not there (pass --data_dir if it moved)")
    dataset = load_dataset(data_dir, need_stats=False)
    tokenizer = dataset.tokenizer()
    trained_with = ckpt.get("dataset", {}).get("tokenizer_fingerprint")
    if trained_with and trained_with != dataset.fingerprints()["tokenizer_fingerprint"]:
        raise UserError(f"the tokenizer of {data_dir} is not the one {path} was trained with (its token ids would decode to "
             f"other characters): pass the run's own --data_dir")
    if tokenizer.vocab_size != model.config.vocab_size:
        raise UserError(f"tokenizer in {data_dir} has {tokenizer.vocab_size} tokens but the model was trained "
             f"with {model.config.vocab_size}: wrong --data_dir?")
    return model, ckpt, tokenizer, data_dir
