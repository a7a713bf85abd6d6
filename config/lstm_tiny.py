# lstm_tiny: ~1M-parameter LSTM (3 layers x 208 wide, head tied to the embedding), the same parameter count
# (within 3%) as gpt_tiny on the default dataset. Same data, order and 8192 tokens per optimizer
# step as the GPT configs. Run with train_rnn.py (or train.py: model_type is set here).
# One epoch of data/music21 (2.8M tokens) takes ~3-6 minutes on a 2-core CPU.
out_dir = 'out/lstm_tiny'
model_type = 'lstm'
n_layer = 3
n_embd = 208
batch_size = 32
block_size = 256
gradient_accumulation_steps = 1
# learning rate: one epoch on data/music21 gave val loss 1.162 at 1e-2 vs 1.267 at 3e-3 (2026-11-22);
# the larger configs scale it down by the usual rule of thumb, untuned
learning_rate = 1e-2
min_lr = 1e-2 / 10
