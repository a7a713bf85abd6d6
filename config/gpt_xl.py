# gpt_xl: ~130M-parameter GPT (18 layers x 768 wide, 12 heads of 64).
# Every config trains on batch_size * block_size * gradient_accumulation_steps = 8192 tokens per
# optimizer step, so a study is iso-batch; the budget defaults to one epoch of train.bin.
out_dir = 'out/gpt_xl'
model_type = 'gpt'
n_layer = 18
n_head = 12
n_embd = 768
batch_size = 32
block_size = 256
gradient_accumulation_steps = 1
learning_rate = 6e-4
min_lr = 6e-4 / 10
