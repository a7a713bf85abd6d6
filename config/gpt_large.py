# gpt_large: ~50M-parameter GPT (16 layers x 512 wide, 8 heads of 64).
# Every config trains on batch_size * block_size * gradient_accumulation_steps = 8192 tokens per
# optimizer step, so a study is iso-batch; the budget defaults to one epoch of train.bin.
out_dir = 'out/gpt_large'
model_type = 'gpt'
n_layer = 16
n_head = 8
n_embd = 512
batch_size = 32
block_size = 256
gradient_accumulation_steps = 1
learning_rate = 8e-4
min_lr = 8e-4 / 10
