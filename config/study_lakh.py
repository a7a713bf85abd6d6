# The seeds' full study on Lakh MIDI, for one GPU: GPT tiny..xl and LSTM tiny..large, every model on the
# same 100M training tokens (one pass, same order), char-level ABC from midi2abc.
#   python study.py config/study_lakh.py --dataset_input=/data/lmd_full
# Lakh MIDI is not shipped (bring your own: lmd_full, ~178k files). The conversion runs on all cores and
# is cached in data/.cache/convert, so an interrupted study starts again without converting anything twice.
# Untested end to end so far (no GPU was available when it was written); see BENCHMARKS.md.
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
max_tokens = 100_000_000
train_args = '--eval_interval=500 --eval_iters=50 --log_interval=50 --ckpt_interval=1000'
device = 'cuda'

n_bootstrap = 2000
num_samples = 20
samples_per_prompt = 5
samples_per_size = 20
max_new_tokens = 2048
reference_tunes = 500
