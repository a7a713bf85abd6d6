# GPU study: the quick study's design at the scale of one GPU, from prepared data/music21.
# GPT and LSTM, 10 sizes each over 3.2-3.4 decades of parameters (GPT 3.7k-6.4M, LSTM 2.4k-6.6M), each trained once
# with the warmup-stable-decay schedule up to 2.5M tokens (0.9 epoch: no token is seen twice) and branched into
# cooldowns at 250k, 500k, 1M and 2.5M tokens (a decade of D for about the price of one run per size: docs/wsd.md);
# two sizes of each family trained twice (another seed: the run-to-run noise of the fits' intervals); every size at
# the rate of its family's learning-rate law, fitted to a sweep of 0.25x-2x on an eighth of the largest budget
# (larger sizes' grids centred on the smaller ones' law, grown a step at an edge). The quick study on one H200 could
# not conclude (GPT alpha = 0.13 [0.023, 0.31]: N spanned 1.5 decades, D 4x; issue #30).
# Why 10 sizes reaching down to a few thousand parameters: `--forecast` (docs/fits.md, "Will a design conclude?")
# drew this plan's fits from the quick study's laws and errors. Against the first design (6 sizes from 12k) alpha's
# intervals narrow 1.5-2.9x, beta's 1.1-2.2x; with the quick study's errors GPT L(N) alpha comes within half of
# itself in 70% of draws (from 3%) and LSTM beta in all, the joint alphas in under a tenth (LSTM's seeds 1.4% apart,
# GPT's short cooldowns ~1.2%); with errors of 0.2-0.3% LSTM's exponents and GPT's beta pass in ~all draws. The small
# sizes carry most of what the fits learn about alpha. Forecast from the GPU's own pilot (the quick study run there)
# before trusting any of this: the GPU's errors are not measured yet.
#   python study.py config/study_gpu.py                 # README's GPU quick start
#   python study.py config/study_gpu.py --estimate=True  # its projected training time on this GPU, without training
# Time on one H200: NOT MEASURED (no GPU was lent to the sessions that wrote it). Estimate from the quick study's
# H200 run (121 eager trainings, 3 min 08 s of steps at 2,048 tokens a step, ~14 ms a step summed over the
# parallel runs): this plan trains ~94M tokens (sweeps 25M, trunks 48M, cooldowns 20M), ~23k steps of 4,096
# tokens, ~5-6 min of steps at the same step times (the small models are launch-bound: twice the tokens a step
# costs about the same); in workers (worker_runs, automatic on CUDA: no process, CUDA context or import per run),
# 4 runs at once, then test losses, samples, syntax evaluation and the report: ~10-13 min in all from prepared data,
# which may pass the 10. Should it: --parallel_runs=8 (launch-bound runs leave the GPU idle between kernels;
# the machine has 16 cores) before --lr_sweep=x0.5,x1,x2 (a quarter fewer sweep runs). Measure it with the line
# above and put the figure here and in BENCHMARKS.md.
out_dir = 'out/study_gpu'
data_dir = 'data/music21'   # prepared by prepare.py's defaults (the music21 corpus) when missing

runs = """
gpt_8     config/gpt_tiny.py   --n_layer=1 --n_head=1 --n_embd=8
gpt_16    config/gpt_tiny.py   --n_layer=2 --n_head=2 --n_embd=16
gpt_32    config/gpt_tiny.py   --n_layer=2 --n_head=2 --n_embd=32
gpt_48    config/gpt_tiny.py   --n_layer=2 --n_head=2 --n_embd=48
gpt_64    config/gpt_tiny.py   --n_layer=3 --n_head=4 --n_embd=64
gpt_96    config/gpt_tiny.py   --n_layer=3 --n_head=4 --n_embd=96
gpt_128   config/gpt_tiny.py   --n_layer=4 --n_head=4 --n_embd=128
gpt_160   config/gpt_tiny.py   --n_layer=5 --n_head=5 --n_embd=160
gpt_192   config/gpt_tiny.py   --n_layer=6 --n_head=6 --n_embd=192
gpt_256   config/gpt_tiny.py   --n_layer=8 --n_head=8 --n_embd=256
lstm_12   config/lstm_tiny.py  --n_layer=1 --n_embd=12
lstm_24   config/lstm_tiny.py  --n_layer=1 --n_embd=24
lstm_48   config/lstm_tiny.py  --n_layer=1 --n_embd=48
lstm_64   config/lstm_tiny.py  --n_layer=2 --n_embd=64
lstm_96   config/lstm_tiny.py  --n_layer=2 --n_embd=96
lstm_144  config/lstm_tiny.py  --n_layer=2 --n_embd=144
lstm_192  config/lstm_tiny.py  --n_layer=2 --n_embd=192
lstm_288  config/lstm_tiny.py  --n_layer=2 --n_embd=288
lstm_384  config/lstm_tiny.py  --n_layer=2 --n_embd=384
lstm_640  config/lstm_tiny.py  --n_layer=2 --n_embd=640
"""
token_budgets = '2.5e5,5e5,1e6,2.5e6'   # a decade of D, up to 0.9 epoch of data/music21's ~2.85M training tokens
wsd_branches = True                     # one trunk per size and seed, the budgets' cooldowns branch from it
seeds = 2
seed_sizes = 'gpt_32,gpt_128,lstm_48,lstm_192'
lr_sweep = 'x0.25,x0.5,x1,x2'
lr_sweep_tokens = 0.125                 # 312k tokens a sweep run, with the full 20-step warm-up of the real runs
# 4,096 tokens a step (batch 16 x block 256): 61 steps for the 250k budget, 610 for 2.5M. Eager, as the quick
# study was measured on the H200: for these launch-bound sizes a compilation per shape would cost more than it saves
# (try --train_args='... --compile=True': the workers keep each shape's graph, and the compile cache persists)
train_args = ('--batch_size=16 --warmup_iters=20 --eval_interval=200 --eval_iters=10 --compile=False '
              '--lr_schedule=wsd')
device = 'cuda'
parallel_runs = 0           # automatic: as many at once as the GPU's memory holds, at most 4

n_bootstrap = 1000
num_samples = 64
samples_per_prompt = 3
samples_per_size = 3
max_new_tokens = 1024
reference_tunes = 130       # every real test tune
