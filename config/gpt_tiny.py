# gpt_tiny: ~1M-parameter GPT (5 layers x 128 wide, 4 heads of 32).
# On a laptop CPU one epoch takes a while; --max_tokens=1e6 gives a quick first run.
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
learning_rate = 2e-3
min_lr = 2e-3 / 10
