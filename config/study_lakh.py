# The seeds' full study on Lakh MIDI, for one GPU, on the design of config/study_gpu.py: GPT tiny..xl and LSTM
# tiny..large, each size trained once with the warmup-stable-decay schedule up to 100M training tokens (one pass,
# same order) and branched into cooldowns at 12.5M, 25M, 50M and 100M tokens (8x of D for about the price of one run
# per size: docs/wsd.md); gpt_tiny, gpt_small, lstm_tiny and lstm_small trained twice (another seed: the run-to-run
# noise of the fits' intervals); every size at the rate of its family's learning-rate law, fitted to a sweep of
# 0.25x-2x on 1/16 of the largest budget (6.25M tokens a sweep run; larger sizes' grids centred on the smaller
# ones' law). Char-level ABC from midi2abc.
#   python study.py config/study_lakh.py --dataset_input=/data/lmd_full
#   python study.py config/study_lakh.py --dry_run=True   # the plan: sweep, budgets and seeds of every size
# Lakh MIDI is not shipped (bring your own: lmd_full, ~178k files). The conversion runs on all cores and
# is cached in data/.cache/convert, so an interrupted study starts again without converting anything twice.
# Untested end to end so far (no GPU was available when it was written); config/study_lakh_timing.py times its
# runs on data/music21 (BENCHMARKS.md). Its training is ~1.75G tokens (13 trunks to 80M: 1.04G; the cooldowns:
# 0.49G; the sweep: 0.23G), about twice the 0.9G of the one 100M-token run per size it replaces.
out_dir = 'out/study_lakh'
data_dir = 'data/lakh'
dataset_input = ''          # give it: --dataset_input=/path/to/lmd_full
dataset_input_required = True
prepare_args = '--tokenizer char --max_chars 100000'   # whole songs are long: keep them

runs = """
gpt_tiny     config/gpt_tiny.py
gpt_small    config/gpt_small.py
gpt_medium   config/gpt_medium.py
gpt_large    config/gpt_large.py
gpt_xl       config/gpt_xl.py
lstm_tiny    config/lstm_tiny.py
lstm_small   config/lstm_small.py
lstm_medium  config/lstm_medium.py
lstm_large   config/lstm_large.py
"""
token_budgets = '1.25e7,2.5e7,5e7,1e8'
wsd_branches = True          # one trunk per size and seed, the budgets' cooldowns branch from it
seeds = 2
seed_sizes = 'gpt_tiny,gpt_small,lstm_tiny,lstm_small'
lr_sweep = 'x0.25,x0.5,x1,x2'
lr_sweep_tokens = 0.0625     # 6.25M tokens a sweep run
train_args = '--eval_interval=500 --eval_iters=50 --log_interval=50 --ckpt_interval=1000 --lr_schedule=wsd'
device = 'cuda'

n_bootstrap = 2000
num_samples = 20
samples_per_prompt = 5
samples_per_size = 20
max_new_tokens = 2048
reference_tunes = 500
