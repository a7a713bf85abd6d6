"""How study.py restarts the runs of a study that was stopped (script_runs.train_args)."""
import script_runs


def run_spec(run_dir):
    return {"script": "train.py", "argv": ["config/gpt_tiny.py", f"--out_dir={run_dir}"], "run_dir": str(run_dir)}


def test_a_new_run_starts_an_interrupted_one_resumes_one_killed_before_its_first_checkpoint_starts_over(tmp_path):
    run_dir = tmp_path / "gpt"
    args, resume = script_runs.train_args(run_spec(run_dir))
    assert args == ["train.py", "config/gpt_tiny.py", f"--out_dir={run_dir}"] and not resume

    run_dir.mkdir()
    (run_dir / "log.jsonl").write_text('{"iter": 0}\n')  # killed before the first checkpoint: nothing to resume
    args, resume = script_runs.train_args(run_spec(run_dir))
    assert args[-1] == "--overwrite=True" and not resume

    (run_dir / "ckpt.pt").write_bytes(b"")
    args, resume = script_runs.train_args(run_spec(run_dir))
    assert args[-1] == "--init_from=resume" and resume
