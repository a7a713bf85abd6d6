# gpt_small: ~5M-parameter GPT (6 layers x 256 wide, 4 heads of 64).
# Every config trains on batch_size * block_size * gradient_accumulation_steps = 8192 tokens per
# optimizer step, so a study is iso-batch; the budget defaults to one epoch of train.bin.
out_dir = 'out/gpt_small'
model_type = 'gpt'
n_layer = 6
n_head = 4
n_embd = 256
batch_size = 32
block_size = 256
gradient_accumulation_steps = 1
learning_rate = 3e-3
min_lr = 3e-3 / 10
