# Times the seeds' study on any GPU, without Lakh MIDI: config/study_lakh.py's plan (GPT tiny..xl, LSTM tiny..large,
# its learning-rate sweep, wsd trunks and cooldowns up to 100M tokens, seed repeats) on data/music21 (2.8M training
# tokens, so ~35 epochs of it: the loss means nothing, the time per token is what study_lakh's training will take).
#   python study.py config/study_lakh_timing.py --estimate=True   # a few steps of each run -> projected total
#   python study.py config/study_lakh_timing.py                   # the whole training, timed
import os

exec(open(os.path.join(os.path.dirname(__file__), "study_lakh.py")).read())

out_dir = 'out/study_lakh_timing'
data_dir = 'data/music21'     # prepared from the music21 corpus when missing
dataset_input_required = False
prepare_args = ''
