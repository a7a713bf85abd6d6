"""
Train an LSTM language model: train.py's loop with LSTM defaults (the lstm_tiny shape).
Everything else -- data order, budget, schedule, checkpoints, outputs -- is train.py's, so a GPT
and an LSTM of the study differ only in the model.

    python train_rnn.py config/lstm_small.py --max_tokens=2e6
"""

import train

# the LSTM defaults; config files and --key=value still override them
LSTM_DEFAULTS = dict(
    model_type='lstm',
    out_dir='out/lstm',
    n_layer=3,
    n_embd=208,
    learning_rate=1e-2,
    min_lr=1e-3,
)

if __name__ == "__main__":
    train.main(**LSTM_DEFAULTS)
