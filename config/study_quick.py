# Quick study: the README's main command (`make demo`). Both families, 4 sizes each (~30k to ~1M
# parameters), every model trained on the same 2M tokens (~0.7 epoch) of the default dataset
# data/music21, in the same order, at the learning rate a short sweep chose for its size; then test loss,
# fits, samples, syntax evaluation and report.md. Sized to finish inside 20 minutes on a 2-core CPU
# (projected by --estimate=True; measured: see README).
#   python study.py config/study_quick.py
out_dir = 'out/study_quick'
data_dir = 'data/music21'   # prepared by prepare.py's defaults (the music21 corpus) when missing

runs = """
gpt_32    config/gpt_tiny.py   --n_layer=2 --n_head=2 --n_embd=32
gpt_64    config/gpt_tiny.py   --n_layer=2 --n_head=2 --n_embd=64
gpt_96    config/gpt_tiny.py   --n_layer=3 --n_head=3 --n_embd=96
gpt_128   config/gpt_tiny.py   --n_layer=4 --n_head=4 --n_embd=128
lstm_64   config/lstm_tiny.py  --n_layer=1 --n_embd=64
lstm_96   config/lstm_tiny.py  --n_layer=2 --n_embd=96
lstm_160  config/lstm_tiny.py  --n_layer=2 --n_embd=160
lstm_208  config/lstm_tiny.py  --n_layer=3 --n_embd=208
"""
max_tokens = 2_000_000
# learning rate tuned per size: each size at 0.25x, 0.5x, 1x and 2x its config's rate on an eighth of the budget
# (250k tokens; from the third size of a family on, the grid centred on the smaller sizes' best rates, and grown a
# step where the best is at its edge), then every size on the full 2M tokens at the rate of the learning-rate law
# fitted to the sweeps of its family; only those runs enter the fits (study.py, study_plan.py, lr_law.py).
# 0.25x because a first sweep found the GPTs best at 0.5x, the low edge of x0.5-x2.
# An eighth, not a quarter: with a quarter, --estimate projected 16-21 min of training alone (2026-11-23)
lr_sweep = 'x0.25,x0.5,x1,x2'
lr_sweep_tokens = 0.125
# 2,048 tokens per optimizer step (batch 8 x block 256), not the configs' 8,192: at 2M tokens these models are
# limited by the number of steps. Measured on lstm_208 at its 0.01 rate, 2M tokens (2-core CPU, 2026-11-23):
# val loss 1.229 / 1.178 / 1.158 at batch 32 / 16 / 8, bars filling the meter in 192 sampled tunes
# 0.85 / 0.93 / 0.91, the same tokens/s within 6%; gpt_128 on 500k tokens: 2.296 / 2.214 / 2.158
train_args = '--batch_size=8 --eval_interval=50 --eval_iters=10 --compile=False'
device = 'cpu'

n_bootstrap = 1000
num_samples = 64          # unconditional tunes from the best model: a rate known to within a few points
samples_per_prompt = 3
samples_per_size = 5
max_new_tokens = 1024
reference_tunes = 130       # every real test tune
