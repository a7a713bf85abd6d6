# Chinchilla-style quick study: a small N x D grid -- 5 GPT sizes (12k to 838k parameters), each trained on 4 token
# budgets spanning a decade, every (size, budget) its own run with its own cosine schedule -- on the default dataset
# data/music21; then the joint fit L(N, D) = E + A/N^alpha + B/D^beta with bootstrap intervals, the compute-optimal
# N(C) and D(C), iso-loss and iso-FLOP plots, and report.md. The L(N) fits use the largest budget's runs.
# What it adds to config/study_quick.py (make demo): a decade of D where the demo spans 4x (its joint fit warns that
# beta needs more), and separate runs per budget in Hoffmann et al.'s design, the check at study scale that the
# demo's warmup-stable-decay branches lead to the same L(N, D) (docs/wsd.md compares the two schedules).
# Its time on a 2-core CPU: 11 min 01 s with data prepared (41 runs; BENCHMARKS.md, "Whole study", 2026-11-30);
# --estimate=True projects it on any machine. Its results: docs/results.md.
#   python study.py config/study_chinchilla_quick.py
out_dir = 'out/study_chinchilla_quick'
data_dir = 'data/music21'   # prepared by prepare.py's defaults (the music21 corpus) when missing

runs = """
gpt_16    config/gpt_tiny.py   --n_layer=2 --n_head=2 --n_embd=16
gpt_32    config/gpt_tiny.py   --n_layer=2 --n_head=2 --n_embd=32
gpt_64    config/gpt_tiny.py   --n_layer=2 --n_head=2 --n_embd=64
gpt_96    config/gpt_tiny.py   --n_layer=3 --n_head=3 --n_embd=96
gpt_128   config/gpt_tiny.py   --n_layer=4 --n_head=4 --n_embd=128
"""
token_budgets = '2e5,4e5,1e6,2e6'   # a decade of D (2M tokens is 0.7 epoch: no token is seen twice)
# learning rate per size from a learning-rate law (lr_law.py), not gpt_tiny's 6e-3 for all: each size swept at
# 0.25x-2x on an eighth of the largest budget (250k tokens, the length of the shortest runs; larger sizes' grids
# centred on the law of the smaller ones, grown a step at an edge), the law's rate reused for every budget.
# Measured (2026-11-30, docs/results.md): lr* = 0.416 N^-0.377, 0.012 for gpt_16 down to 0.0024 for gpt_128; the
# losses fall with N at every budget (with the sweep's warm-up shrunk, 2026-11-29, the rates were ~2x lower and the
# larger sizes ended 0.05-0.10 nats worse at 2M tokens)
lr_sweep = 'x0.25,x0.5,x1,x2'
lr_sweep_tokens = 0.125
# warm-up 10 steps (not 30): the 200k-token runs take 24 steps of 8192 tokens, and their cosine must have room
train_args = '--eval_interval=50 --eval_iters=10 --compile=False --warmup_iters=10'
device = 'cpu'
parallel_runs = 2         # two runs at once on one thread each: BENCHMARKS.md, "CPU threads per training"
train_threads = 1

n_bootstrap = 1000
num_samples = 16          # the grid is the point here; a few tunes from the best model show it works
samples_per_prompt = 3
samples_per_size = 3
max_new_tokens = 1024
reference_tunes = 130       # every real test tune
