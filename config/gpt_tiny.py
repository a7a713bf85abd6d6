# gpt_tiny: ~1M-parameter GPT (5 layers x 128 wide, 4 heads of 32).
# One epoch of data/music21 (2.8M tokens) takes ~4 minutes on a 2-core CPU.
# Every config trains on batch_size * block_size * gradient_accumulation_steps = 8192 tokens per
# optimizer step, so a study is iso-batch; the budget defaults to one epoch of train.bin.
out_dir = 'out/gpt_tiny'
model_type = 'gpt'
n_layer = 5
n_head = 4
n_embd = 128
batch_size = 32
block_size = 256
gradient_accumulation_steps = 1
# learning rate: one epoch on data/music21 gave val loss 1.547 at 6e-3 vs 1.676 at 2e-3 (2026-11-22);
# the larger configs scale it down by the usual rule of thumb, untuned
learning_rate = 6e-3
min_lr = 6e-3 / 10
