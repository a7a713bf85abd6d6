# Quick study: the README's main command (`make demo`). Both families, 6 sizes each spanning 1.5 decades of
# parameters (~12k to ~480k), each size trained once with the warmup-stable-decay schedule up to 1M tokens and
# branched into a cooldown at 250k, 500k and 1M tokens (three budgets for about the price of one run: docs/wsd.md),
# two sizes of each family trained twice (another seed: the run-to-run noise the fits' intervals need), every
# size at the rate of its family's learning-rate law fitted to a short sweep; then test loss, L(N) per family with
# bootstrap intervals, the joint L(N, D) fit, samples, syntax evaluation and report.md. Sized for 15 minutes on a
# 2-core CPU; measured 7 min 46 s with data prepared (BENCHMARKS.md, "Whole study").
#   python study.py config/study_quick.py
out_dir = 'out/study_quick'
data_dir = 'data/music21'   # prepared by prepare.py's defaults (the music21 corpus) when missing

runs = """
gpt_16    config/gpt_tiny.py   --n_layer=2 --n_head=2 --n_embd=16
gpt_24    config/gpt_tiny.py   --n_layer=2 --n_head=2 --n_embd=24
gpt_32    config/gpt_tiny.py   --n_layer=2 --n_head=2 --n_embd=32
gpt_48    config/gpt_tiny.py   --n_layer=2 --n_head=2 --n_embd=48
gpt_64    config/gpt_tiny.py   --n_layer=2 --n_head=2 --n_embd=64
gpt_96    config/gpt_tiny.py   --n_layer=4 --n_head=4 --n_embd=96
lstm_32   config/lstm_tiny.py  --n_layer=1 --n_embd=32
lstm_48   config/lstm_tiny.py  --n_layer=1 --n_embd=48
lstm_64   config/lstm_tiny.py  --n_layer=1 --n_embd=64
lstm_96   config/lstm_tiny.py  --n_layer=2 --n_embd=96
lstm_128  config/lstm_tiny.py  --n_layer=2 --n_embd=128
lstm_160  config/lstm_tiny.py  --n_layer=2 --n_embd=160
"""
token_budgets = '2.5e5,5e5,1e6'   # 0.35 epoch at most: no token is seen twice
wsd_branches = True               # one trunk per size and seed, the budgets' cooldowns branch from it
seeds = 2
seed_sizes = 'gpt_32,gpt_64,lstm_64,lstm_128'
# learning rate per size: each size at 0.25x-2x its config's rate on an eighth of the largest budget (125k tokens,
# with the full 30-step warm-up of the real runs), then every size at the rate of its family's learning-rate law
lr_sweep = 'x0.25,x0.5,x1,x2'
lr_sweep_tokens = 0.125
# 2,048 tokens per optimizer step (batch 8 x block 256), not the configs' 8,192: at these budgets the models are
# limited by the number of steps (docs/results.md, "batch size of the quick study")
train_args = '--batch_size=8 --eval_interval=100 --eval_iters=10 --compile=False --lr_schedule=wsd'
device = 'cpu'
# two runs at once, one thread each: on 2 cores 1.2x the throughput of one run on two threads, and two threads
# slow down 25x as soon as anything else wants a core (BENCHMARKS.md, "CPU threads per training")
parallel_runs = 2
train_threads = 1

n_bootstrap = 1000
num_samples = 64          # unconditional tunes from the best model: a rate known to within a few points
samples_per_prompt = 3
samples_per_size = 3
max_new_tokens = 1024
reference_tunes = 130       # every real test tune
