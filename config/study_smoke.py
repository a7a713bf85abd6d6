# Smoke study: the whole pipeline of study.py -- prepare, train 3 GPT + 3 LSTM sizes, test perplexity, fits,
# samples with MIDI/WAV/SVG, eval_syntax, report -- in 1-2 minutes on a 2-core CPU (BENCHMARKS.md).
# tests/test_study.py runs it end to end; its numbers say nothing about music (tiny models, 16k training tokens).
#   python study.py config/study_smoke.py
import importlib.util
import os

_corpus = os.path.join(importlib.util.find_spec("music21").submodule_search_locations[0], "corpus")

out_dir = 'out/study_smoke'
data_dir = ''  # the dataset lives inside out_dir, so the smoke study touches nothing else
dataset_input = os.path.join(_corpus, 'airdsAirs', 'book1.abc')  # 200 tunes of one ABC book
prepare_args = '--split_fractions 0.7,0.15,0.15 --cache_dir "" --workers 2'  # 30 real test tunes: see reference_tunes

# three sizes per family: the fewest a 3-parameter fit accepts (it will warn that they are too few)
runs = """
gpt_16    config/gpt_tiny.py   --n_layer=1 --n_head=2 --n_embd=16
gpt_32    config/gpt_tiny.py   --n_layer=1 --n_head=2 --n_embd=32
gpt_48    config/gpt_tiny.py   --n_layer=2 --n_head=2 --n_embd=48
lstm_16   config/lstm_tiny.py  --n_layer=1 --n_embd=16
lstm_40   config/lstm_tiny.py  --n_layer=1 --n_embd=40
lstm_64   config/lstm_tiny.py  --n_layer=1 --n_embd=64
"""
max_tokens = 16384
train_args = ('--batch_size=8 --block_size=64 --warmup_iters=4 --eval_interval=8 --eval_iters=2 '
              '--log_interval=4 --ckpt_interval=16 --compile=False')
device = 'cpu'

n_bootstrap = 200
num_samples = 16         # >= 10 with notes (9 of 12 had some), so Yang & Lerch's comparison has enough tunes to be made
samples_per_prompt = 3
samples_per_size = 3
max_new_tokens = 200   # tiny models rarely end a tune by themselves
reference_tunes = 30     # every test tune: 16 against 30 leaves 14 real tunes for the real-vs-real baseline
