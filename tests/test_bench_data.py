"""bench_data.py (`make bench`, BENCHMARKS.md's data pipeline rows): it converts MIDI through prepare.py's own worker,
so it must pass that worker the settings under prepare.py's current names, and every file must really convert."""
import bench_data


def test_bench_data_converts_every_synthetic_file_and_times_the_tokenizers(char_dataset, capsys):
    bench_data.main(["--n_files=2", "--workers=1", f"--data_dir={char_dataset}"])
    out = capsys.readouterr().out
    assert "(2 synthetic Lakh-like files (6 tracks x 500 notes, 3 min), 2 converted)" in out
    assert "files/s with 1 worker" in out and "BPE training took" in out
