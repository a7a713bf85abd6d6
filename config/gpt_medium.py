# gpt_medium: ~20M-parameter GPT (12 layers x 384 wide, 6 heads of 64).
# Every config trains on batch_size * block_size * gradient_accumulation_steps = 8192 tokens per
# optimizer step, so a study is iso-batch; the budget defaults to one epoch of train.bin.
out_dir = 'out/gpt_medium'
model_type = 'gpt'
n_layer = 12
n_head = 6
n_embd = 384
batch_size = 32
block_size = 256
gradient_accumulation_steps = 1
learning_rate = 1.5e-3
min_lr = 1.5e-3 / 10
