# lstm_medium: ~20M-parameter LSTM (3 layers x 944 wide, head tied to the embedding), the same parameter count
# (within 3%) as gpt_medium on the default dataset. Same data, order and 8192 tokens per optimizer
# step as the GPT configs. Run with train_rnn.py (or train.py: model_type is set here).
out_dir = 'out/lstm_medium'
model_type = 'lstm'
n_layer = 3
n_embd = 944
batch_size = 32
block_size = 256
gradient_accumulation_steps = 1
learning_rate = 3e-3
min_lr = 3e-3 / 10
