"""
Token windows as (x, y) tensors on the device: the training batches in the study's fixed order, and the
loss over evaluation windows -- the exact pass that scores every token of a split once (train.py's final
validation and calc_perplexity.py run this same code) and the quick estimate on a fixed set of windows.

A split lives on the device as one tensor (a memory map stays a memory map on CPU), and a batch is one
gather from it: no Python loop over rows, no host-to-device copy per step. Token ids are stored in their
on-disk width (uint16 viewed as int16, uint32 as int32) and widened after the gather.
"""
import contextlib
import math

import numpy as np
import torch
import torch.nn.functional as F

from music_scaling_laws.data.dataset import epoch_order
from music_scaling_laws.progress import progress_bar


class Tokens:
    """A 1-D array of token ids on a device, gathered into windows."""

    def __init__(self, array, device="cpu"):
        array = np.asarray(array) if not isinstance(array, np.memmap) else array
        if array.dtype == np.uint16:
            view, self.mask = array.view(np.int16), 0xFFFF
        elif array.dtype == np.uint32:
            view, self.mask = array.view(np.int32), 0xFFFFFFFF
        else:
            view, self.mask = array.astype(np.int64, copy=False), None
        if not view.flags.writeable:  # torch wants a writable buffer; nothing here ever writes to it
            view = view.copy()
        self.data = torch.from_numpy(view).to(device)
        self.device = self.data.device
        self.n = len(array)

    def windows(self, starts, block_size, lengths=None, skips=None):
        """x, y of shape (len(starts), block_size), int64. A window reads tokens start .. start+block_size;
        targets at positions >= its length or < its skip are -1 (not scored). starts etc. are tensors on the device."""
        offsets = torch.arange(block_size + 1, device=self.device)
        idx = (starts[:, None] + offsets).clamp_(max=self.n - 1)
        w = self.data[idx].long()
        if self.mask is not None:
            w &= self.mask
        x, y = w[:, :-1], w[:, 1:]
        if lengths is not None:
            pos = offsets[:-1][None, :]
            unscored = pos >= lengths[:, None]
            if skips is not None:
                unscored |= pos < skips[:, None]
            y = y.masked_fill(unscored, -1)
        return x, y


class TrainBatches:
    """Micro-batches of the training split in the global window order of a dataset.TrainOrder: optimizer step
    `it` reads windows [it*W, (it+1)*W) of the order, micro-step m of rank r slot m * world_size + r of them.
    The order of an epoch (and, for tune-aligned windows, the table of window starts and target counts) is
    uploaded once; a batch is then a slice, a lookup and one gather."""

    def __init__(self, tokens, order, batch_size, windows_per_iter, rank=0, world_size=1):
        self.tokens, self.order, self.block_size = tokens, order, order.block_size
        self.batch_size, self.windows_per_iter = batch_size, windows_per_iter
        self.rank, self.world_size = rank, world_size
        device = tokens.device
        self.start_table = None if order.start_table is None else torch.from_numpy(order.start_table).to(device)
        self.target_table = None if order.target_table is None else torch.from_numpy(order.target_table).to(device)
        self._epochs = {}

    def _epoch(self, epoch):
        if epoch not in self._epochs:
            self._epochs = {e: o for e, o in self._epochs.items() if e >= epoch - 1}  # keep at most two epochs
            order = epoch_order(self.order.n_windows, self.order.data_seed, epoch)
            self._epochs[epoch] = torch.from_numpy(order.astype(np.int64)).to(self.tokens.device)
        return self._epochs[epoch]

    def indices(self, first, count):
        """Indices of windows first .. first+count-1 of the order, on the device."""
        parts = []
        while count > 0:
            epoch, offset = divmod(first, self.order.n_windows)
            take = min(count, self.order.n_windows - offset)
            parts.append(self._epoch(epoch)[offset:offset + take])
            first, count = first + take, count - take
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def micro_batch(self, it, micro):
        slot = micro * self.world_size + self.rank
        idx = self.indices(it * self.windows_per_iter + slot * self.batch_size, self.batch_size)
        if self.start_table is None:
            return self.tokens.windows(idx * self.block_size, self.block_size)
        return self.tokens.windows(self.start_table[idx], self.block_size, self.target_table[idx])


# ----------------------------------------------------------------------------- evaluation windows

def exact_windows(n_tokens, block_size, stride):
    """(starts, lengths, skips) of windows over a sequence of n_tokens whose scored targets are tokens
    1 .. n_tokens-1, each exactly once and in order: windows start every `stride` tokens, hold up to block_size
    inputs, and score only the targets the previous window did not (so each sees >= block_size - stride tokens
    of context after the first window)."""
    n_targets = n_tokens - 1
    starts, lengths, skips = [], [], []
    begin, scored_until = 0, 0
    while scored_until < n_targets:
        end = min(begin + block_size, n_targets)
        starts.append(begin)
        lengths.append(end - begin)
        skips.append(scored_until - begin)
        scored_until = end
        begin += stride
    return np.array(starts, dtype=np.int64), np.array(lengths, dtype=np.int64), np.array(skips, dtype=np.int64)


def spread_windows(n_tokens, block_size, count):
    """Starts of `count` full windows evenly spread over a split: the fixed set a validation estimate uses."""
    full = np.arange(0, n_tokens - 1 - block_size + 1, block_size, dtype=np.int64)
    pick = np.unique(np.linspace(0, len(full) - 1, min(count, len(full))).round().astype(np.int64))
    return full[pick]


def window_batches(tokens, starts, block_size, batch_size, lengths=None, skips=None, rank=0, world_size=1):
    """(x, y) batches of the windows; every batch is padded to batch_size rows (padding rows score nothing), so
    a model sees one shape. DDP ranks take every world_size-th batch."""
    n = len(starts)
    lengths = np.full(n, block_size, dtype=np.int64) if lengths is None else lengths
    skips = np.zeros(n, dtype=np.int64) if skips is None else skips
    for b in range(rank * batch_size, n, batch_size * world_size):
        rows = slice(b, b + batch_size)
        pad = batch_size - len(starts[rows])
        batch = [torch.from_numpy(np.pad(a[rows], (0, pad))).to(tokens.device) for a in (starts, lengths, skips)]
        yield tokens.windows(batch[0], block_size, batch[1], batch[2])


@torch.no_grad()
def windows_loss(model, tokens, starts, block_size, batch_size, ctx=None, lengths=None, skips=None, rank=0,
                 world_size=1, progress=False):
    """(sum of cross-entropy in nats, number of scored targets) over the windows, summed on the device and
    read once at the end; under DDP the ranks split the batches and the sums are all-reduced."""
    was_training = model.training
    model.eval()
    ctx = ctx if ctx is not None else contextlib.nullcontext()
    total = torch.zeros(2, dtype=torch.float64, device=tokens.device)
    batches = window_batches(tokens, starts, block_size, batch_size, lengths, skips, rank, world_size)
    n_batches = math.ceil(len(starts) / (batch_size * world_size))
    for x, y in progress_bar(batches, total=n_batches, desc="windows", unit="batch", disable=not progress, leave=False):
        with ctx:
            logits, _ = model(x)
        total[0] += F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y.reshape(-1), ignore_index=-1,
                                    reduction="sum")
        total[1] += (y != -1).sum()
    if world_size > 1:
        torch.distributed.all_reduce(total)
    model.train(was_training)
    loss_sum, count = total.tolist()
    return loss_sum, int(count)


def exact_loss(model, split, eot_id, block_size, batch_size, device, ctx=None, stride=None, rank=0, world_size=1,
               progress=False):
    """(mean nats/token, tokens scored) over a whole split, every token scored once. The split is read as the
    model saw its training data: an end-of-tune token precedes it (as one precedes every tune in train.bin),
    so its first token is scored too and the count equals stats.json's `tokens` for the split."""
    seq = np.concatenate([np.array([eot_id], dtype=split.dtype), np.asarray(split)])
    starts, lengths, skips = exact_windows(len(seq), block_size, stride or block_size)
    loss_sum, count = windows_loss(model, Tokens(seq, device), starts, block_size, batch_size, ctx, lengths, skips,
                                   rank, world_size, progress)
    return loss_sum / count, count
