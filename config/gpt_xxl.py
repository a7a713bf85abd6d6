# gpt_xxl: ~740M-parameter GPT (24 layers x 1600 wide, 25 heads of 64).
# Every config trains on batch_size * block_size * gradient_accumulation_steps = 8192 tokens per
# optimizer step, so a study is iso-batch; the budget defaults to one epoch of train.bin.
out_dir = 'out/gpt_xxl'
model_type = 'gpt'
n_layer = 24
n_head = 25
n_embd = 1600
batch_size = 8
block_size = 256
gradient_accumulation_steps = 4
learning_rate = 3e-4
min_lr = 3e-4 / 10
# 740M parameters with AdamW need ~12 GB for weights, gradients and moments; micro-batches of 8
# keep activations to a few GB, so this fits a single 24 GB GPU. On a smaller card set
# grad_checkpoint = True (recompute activations in backward) before lowering batch_size further.
