"""How study.py restarts the runs of a study that was stopped (train_runs.train_args)."""
from music_scaling_laws.study import estimate, jobs, train_runs
def run_spec(run_dir):
    return {"script": "train.py", "argv": ["config/gpt_tiny.py", f"--out_dir={run_dir}"], "run_dir": str(run_dir)}


def test_a_new_run_starts_an_interrupted_one_resumes_one_killed_before_its_first_checkpoint_starts_over(tmp_path):
    run_dir = tmp_path / "gpt"
    args, resume = train_runs.train_args(run_spec(run_dir))
    assert args == ["train.py", "config/gpt_tiny.py", f"--out_dir={run_dir}"] and not resume

    run_dir.mkdir()
    (run_dir / "log.jsonl").write_text('{"iter": 0}\n')  # killed before the first checkpoint: nothing to resume
    args, resume = train_runs.train_args(run_spec(run_dir))
    assert args[-1] == "--overwrite=True" and not resume

    (run_dir / "ckpt.pt").write_bytes(b"")
    args, resume = train_runs.train_args(run_spec(run_dir))
    assert args[-1] == "--init_from=resume" and resume


def test_runs_spread_over_the_devices_one_per_device_before_two_on_any():
    """device_slots + free_slot: with 2 GPUs and 2 runs per GPU, runs 1-4 go to cuda:0, cuda:1, cuda:0, cuda:1;
    when the run on cuda:1 ends, the next run takes its place on cuda:1."""
    slots = train_runs.device_slots(["cuda:0", "cuda:1"], 2)
    busy = set()
    for want in ("cuda:0", "cuda:1", "cuda:0", "cuda:1"):
        k = train_runs.free_slot(slots, busy)
        assert slots[k] == want
        busy.add(k)
    busy.discard(1)
    assert slots[train_runs.free_slot(slots, busy)] == "cuda:1"
    assert train_runs.device_slots(["cpu"], 0) == ["cpu"]  # at least one run at a time


def test_the_study_devices_and_each_run_s_device_argument():
    cfg = {"device": "cuda", "devices": "cuda:0, cuda:3"}
    assert train_runs.study_devices(cfg) == ["cuda:0", "cuda:3"]
    assert train_runs.study_devices({"device": "cpu", "devices": ""}) == ["cpu"]  # on CPU: the study's device
    # the run pinned to a device other than the study's own gets it on its command line (the last --device wins)
    assert train_runs.child_device_args("cuda", "cuda:3") == ["--device=cuda:3"]
    assert train_runs.child_device_args("cpu", "cpu") == []


def test_a_slurm_job_asks_for_the_resources_of_the_study_config():
    """The sbatch script submitit writes for a run's job, from the study's slurm_* knobs (SLURM itself is not
    needed to write it)."""
    from submitit.slurm.slurm import _make_sbatch_string
    cfg = {"slurm_time": 90, "slurm_gpus_per_run": 2, "slurm_cpus_per_run": 16, "slurm_partition": "gpu",
           "slurm_mem_gb": 64, "slurm_args": "account=proj --qos=high"}
    params = jobs.slurm_parameters(cfg, "gpt_small")
    script = _make_sbatch_string(command="python -u -m submitit.core._submit /x", folder="/tmp/x/%j", **params)
    for line in ("--job-name=gpt_small", "--partition=gpu", "--time=90", "--gpus-per-node=2", "--cpus-per-task=16",
                 "--mem=64GB", "--account=proj", "--qos=high", "--nodes=1", "--ntasks-per-node=1"):
        assert f"#SBATCH {line}\n" in script, line
    assert f"export PYTHONPATH={jobs.REPO}" in script  # the job can load jobs.run_job
    assert jobs.torchrun_args(2)[-1] == "--nproc_per_node=2" and jobs.torchrun_args(1) == []


def test_an_estimate_counts_the_tokens_of_a_run_s_evaluations():
    """125,385 tokens at 8 x 256 a step: 61 steps, an estimate at iteration 0 (every 100), the train-loss estimate
    at the end (10 batches each), and the exact pass over a validation split of 23,401 tokens."""
    run = {"tokens": 125385, "train_config": {"batch_size": 8, "block_size": 256, "gradient_accumulation_steps": 1,
                                              "eval_interval": 100, "eval_iters": 10}}
    assert estimate.evaluation_tokens(run, 23401) == 2 * 10 * 2048 + 23401
    run["train_config"]["eval_interval"] = 0  # a sweep run: the final passes only
    assert estimate.evaluation_tokens(run, 23401) == 10 * 2048 + 23401
