"""Distributed P-RGE / MeZO with torch.distributed on CPUs (gloo), 2 and 4 processes started as a
user starts them (torchrun): the losses, the evaluation metrics and the final trained tensors
equal those of the single-process run of the same config. With one data group every point is
evaluated as in one process: bit-identical. Data groups average row means in float64 instead
of one float32 sum: equal to 1e-5 relative. A rank that dies or hangs ends the job with a clear
error within the timeout."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from conftest import make_tiny_assets, write_config
from prge.distributed import Grid
from safetensors.torch import load_file

DATA_PARALLEL_RTOL = 1e-5
# One thread a process: the single-process reference and every rank run the same kernels.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("distributed")
    return tmp, *make_tiny_assets(tmp)


def config_for(tmp, model_dir, data_dir, name, **over):
    directory = tmp / name
    directory.mkdir(exist_ok=True)
    over.setdefault("run", {})
    over["run"] = {"steps": 6, "seed": 1, "eval_every": 3, "log_every": 1, **over["run"],
                   "output_dir": str(directory / "run")}
    return write_config(directory, model_dir, data_dir, **over), directory / "run"


def train(config, processes: int, *extra) -> subprocess.CompletedProcess:
    extra = extra or ("--overwrite",)
    if processes == 1:
        argv = [sys.executable, "-m", "prge", "train", str(config), "--no-progress", *extra]
    else:
        argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
                "-m", "prge", "train", str(config), "--no-progress", *extra]
    done = subprocess.run(argv, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + "\n" + done.stderr[-6000:]
    return done


def records(run_dir) -> list[dict]:
    out = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        record.pop("seconds", None)  # wall clock
        out.append(record)
    return out


def trained(run_dir) -> dict:
    return {k: v for k, v in load_file(str(run_dir / "trained.safetensors")).items()
            if not k.startswith(("optimizer.", "trainer."))}


def assert_same_run(got_dir, want_dir, rtol: float = 0.0):
    got, want = records(got_dir), records(want_dir)
    assert [r["step"] for r in got] == [r["step"] for r in want]
    for g, w in zip(got, want):
        assert g.keys() == w.keys(), (g, w)
        for key in ("loss", "eval_accuracy", "eval_macro_f1"):
            if key in w:
                assert abs(g[key] - w[key]) <= rtol * abs(w[key]), (key, g, w)
        if "sequences" in w and "loss" in w:  # every rank's sequences together
            assert g["sequences"] == w["sequences"], (g, w)
    got_t, want_t = trained(got_dir), trained(want_dir)
    assert got_t.keys() == want_t.keys() and got_t
    for name in want_t:
        if rtol == 0.0:
            assert torch.equal(got_t[name], want_t[name]), name
        else:
            torch.testing.assert_close(got_t[name], want_t[name], rtol=rtol, atol=rtol * want_t[name].abs().max())
    summary = json.loads((got_dir / "summary.json").read_text())
    return summary


CASES = [
    # name, processes, overrides, tolerance
    ("queries-dual-2", 2, {"estimator": {"queries": 4, "parallel": "dual"}}, 0.0),
    ("queries-sequential-4", 4, {"estimator": {"queries": 4, "parallel": "sequential"}}, 0.0),
    ("queries-forward-uneven-2", 2, {"estimator": {"queries": 3, "parallel": "dual", "difference": "forward"}}, 0.0),
    ("data-2", 2, {"estimator": {"queries": 2}, "run": {"data_parallel": 2}}, DATA_PARALLEL_RTOL),
    ("grid-2x2", 4, {"estimator": {"queries": 4}, "run": {"data_parallel": 2}}, DATA_PARALLEL_RTOL),
    ("mezo-queries-2", 2, {"estimator": {"kind": "mezo", "queries": 2, "parallel": "sequential"},
                           "adapter": {"targets": []}, "optimizer": {"lr": 1e-4}}, 0.0),
    ("mezo-data-2", 2, {"estimator": {"kind": "mezo", "queries": 2, "parallel": "sequential"},
                        "adapter": {"targets": []}, "optimizer": {"lr": 1e-4}, "run": {"data_parallel": 2}},
     DATA_PARALLEL_RTOL),
]


@pytest.mark.parametrize("name, processes, overrides, rtol", CASES, ids=[c[0] for c in CASES])
def test_a_distributed_run_equals_the_single_process_run(assets, name, processes, overrides, rtol):
    tmp, model_dir, data_dir = assets
    single, single_dir = config_for(tmp, model_dir, data_dir, name + "-single", **overrides)
    many, many_dir = config_for(tmp, model_dir, data_dir, name, **overrides)
    if "data_parallel" in overrides.get("run", {}):  # the single-process run has one data group
        text = single.read_text().replace(f"data_parallel: {overrides['run']['data_parallel']}", "data_parallel: 1")
        single.write_text(text)
    train(single, 1)
    done = train(many, processes)
    summary = assert_same_run(many_dir, single_dir, rtol)
    assert summary["processes"] == processes
    assert "distributed:" in done.stdout and done.stdout.count("[prge] before training") == 1  # rank 0 logs


def test_a_killed_distributed_run_resumes_to_the_uninterrupted_result(assets):
    tmp, model_dir, data_dir = assets
    over = {"estimator": {"queries": 2}, "run": {"steps": 300, "eval_every": 100, "checkpoint_every": 10}}
    single, single_dir = config_for(tmp, model_dir, data_dir, "resume-single", **over)
    many, many_dir = config_for(tmp, model_dir, data_dir, "resume", **over)
    train(single, 1)
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
            "-m", "prge", "train", str(many), "--no-progress", "--overwrite"]
    job = subprocess.Popen(argv, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = many_dir / "checkpoint.json"
    deadline = time.time() + 300
    while not (state.exists() and json.loads(state.read_text() or "{}").get("step", 0) >= 20):
        assert job.poll() is None and time.time() < deadline, "the run ended before it could be killed"
        time.sleep(0.005)
    for pid in [job.pid, *descendants(job.pid)]:  # torchrun and every rank (each in its own session)
        os.kill(pid, signal.SIGKILL)
    job.wait()
    assert not (many_dir / "summary.json").exists(), "the run finished before the kill: make it longer"
    train(many, 2, "--resume")
    assert_same_run(many_dir, single_dir)


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, from /proc."""
    children = {}
    for stat in os.listdir("/proc"):
        if stat.isdigit():
            try:
                fields = open(f"/proc/{stat}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(stat))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("fault", ["dies", "hangs"])
def test_a_rank_that_dies_or_hangs_ends_the_job_with_a_clear_error(assets, fault):
    """The ranks started by hand with torchrun's environment, so that the test can kill or
    stop one of them; the other must end with prge: error within the timeout, not hang."""
    tmp, model_dir, data_dir = assets
    config, run_dir = config_for(tmp, model_dir, data_dir, f"fault-{fault}",
                                 run={"steps": 100000, "eval_every": 0, "log_every": 1})
    port, timeout = free_port(), 8
    ranks = []
    for rank in range(2):
        env = {**ENV, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        ranks.append(subprocess.Popen([sys.executable, "-m", "prge", "train", str(config), "--no-progress",
                                       "--overwrite", "--rank-timeout", str(timeout)],
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    try:
        metrics = run_dir / "metrics.jsonl"
        deadline = time.time() + 120
        while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 3):
            assert ranks[0].poll() is None and time.time() < deadline, ranks[0].communicate()[1][-2000:]
            time.sleep(0.01)
        ranks[1].send_signal(signal.SIGKILL if fault == "dies" else signal.SIGSTOP)
        start = time.time()
        _, err = ranks[0].communicate(timeout=timeout + 60)
        assert ranks[0].returncode == 2, err[-2000:]
        assert time.time() - start <= timeout + 30
        assert "prge: error: rank 0: step " in err and "no answer from the other ranks" in err, err[-2000:]
        assert not (run_dir / "summary.json").exists()
    finally:
        for process in ranks:
            if process.poll() is None:
                process.kill()
                process.wait()


def test_the_grid_splits_queries_and_rows_and_names_impossible_splits():
    grid = Grid(rank=5, world=6, data_parallel=2)  # 3 query groups x 2 data groups
    assert (grid.query_groups, grid.query_group, grid.data_group) == (3, 2, 1)
    assert [Grid(r, 6, 2).query_range(7) for r in (0, 2, 4)] == [(0, 3), (3, 5), (5, 7)]
    assert [Grid(r, 6, 2).batch_rows(5) for r in (0, 1)] == [(0, 3), (3, 5)]
    with pytest.raises(ValueError, match="run.data_parallel: 4 does not divide the 6 processes"):
        Grid(0, 6, 4)
    with pytest.raises(ValueError, match="estimator.queries: 2 queries cannot be shared by 3 query groups"):
        grid.check(queries=2, batch_size=4)
    with pytest.raises(ValueError, match="data.batch_size: 1 rows cannot be shared"):
        grid.check(queries=3, batch_size=1)


def test_distributed_input_mistakes_are_named(assets, capsys):
    from prge.cli import main

    tmp, model_dir, data_dir = assets
    config, _ = config_for(tmp, model_dir, data_dir, "dp-single", run={"data_parallel": 2})
    spec = tmp / "gpus-sweep.yaml"
    spec.write_text(f"base: {config}\n")
    cases = [
        (["train", str(config), "--no-progress"], "run.data_parallel: 2 needs as many processes"),
        (["train", str(config), "--no-progress", "--rank-timeout", "0"], "--rank-timeout 0: must be a number"),
        (["check", str(config), "--set", "run.data_parallel=0"], "run.data_parallel: must be >= 1"),
        (["sweep", str(spec), "--gpus", "0,x"], "--gpus '0,x': expected distinct GPU indices"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("prge: error: ") and message in err, (argv, err)


def _check_in_step_worker(rank, port, out):
    import torch.distributed as dist

    from prge.distributed import Communicator, RankFailure, check_in_step

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    comm = Communicator(Grid(rank, 2))
    same = [torch.arange(6.0).reshape(2, 3)]
    check_in_step(comm, same, step=4, device="cpu")  # equal: passes
    differs = [same[0] + (1e-7 if rank == 1 else 0.0)]
    try:
        check_in_step(comm, differs, step=5, device="cpu")
        out.put((rank, "passed"))
    except RankFailure as e:
        out.put((rank, str(e)))
    dist.destroy_process_group()


def test_the_weights_check_stops_ranks_that_went_out_of_step():
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    out, port = ctx.Queue(), free_port()
    workers = [ctx.Process(target=_check_in_step_worker, args=(rank, port, out)) for rank in range(2)]
    for w in workers:
        w.start()
    results = dict(out.get(timeout=120) for _ in workers)
    for w in workers:
        w.join(timeout=60)
    for rank in (0, 1):
        assert "step 5: the trained weights of rank(s) [1] differ from rank 0's" in results[rank], results


def test_a_sweep_spreads_its_runs_over_the_listed_gpus_with_the_sequential_results(assets):
    """`--gpus 0,1`: two runs at once, each its own process with CUDA_VISIBLE_DEVICES set (on
    this CPU machine the runs are CPU runs; the scheduling is the same); each run's summary and
    weights equal those of the sequential sweep."""
    import yaml

    from prge.sweep import run_sweep

    tmp, model_dir, data_dir = assets
    base, _ = config_for(tmp, model_dir, data_dir, "sweep-base")
    spec = tmp / "sweep.yaml"
    spec.write_text(yaml.safe_dump({"base": str(base), "grid": {"optimizer.lr": [0.01, 0.02]}}))
    lines = []
    parallel = run_sweep(spec, log=lines.append, progress=False, output_root=str(tmp / "sweep-gpus"), gpus=["0", "1"])
    sequential = run_sweep(spec, log=lambda *a: None, progress=False, output_root=str(tmp / "sweep-seq"))
    started = [i for i, line in enumerate(lines) if "started on GPU" in line]
    done = [i for i, line in enumerate(lines) if line.endswith(("finished on GPU 0", "finished on GPU 1"))]
    assert len(started) == 2 and len(done) == 2 and max(started) < min(done), lines  # both ran at once
    assert {line.split("started on GPU ")[1][0] for line in lines if "started on GPU" in line} == {"0", "1"}
    for p, s in zip(parallel, sequential):
        assert p["accuracy_after"] == s["accuracy_after"] and p["lr"] == s["lr"]
    for label in ("run-lr0.01", "run-lr0.02"):
        assert records(tmp / "sweep-gpus" / label) == records(tmp / "sweep-seq" / label)
        got, want = trained(tmp / "sweep-gpus" / label), trained(tmp / "sweep-seq" / label)
        assert all(torch.equal(got[k], want[k]) for k in want)


def test_ctrl_c_on_torchrun_checkpoints_every_rank_at_one_step_and_resumes(assets):
    """Ctrl-C reaches torchrun, which sends SIGTERM to every rank: the ranks agree (through the
    step's all_gather) on the step to stop after, rank 0 checkpoints it, and --resume finishes
    the run as an uninterrupted single-process run would."""
    tmp, model_dir, data_dir = assets
    over = {"estimator": {"queries": 2}, "run": {"steps": 300, "eval_every": 100}}
    single, single_dir = config_for(tmp, model_dir, data_dir, "sigint-single", **over)
    many, many_dir = config_for(tmp, model_dir, data_dir, "sigint", **over)
    train(single, 1)
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
            "-m", "prge", "train", str(many), "--no-progress", "--overwrite"]
    job = subprocess.Popen(argv, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = many_dir / "metrics.jsonl"
    deadline = time.time() + 300
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 5):
        assert job.poll() is None and time.time() < deadline, "the run ended before it could be interrupted"
        time.sleep(0.005)
    job.send_signal(signal.SIGINT)
    _, err = job.communicate(timeout=120)
    assert job.returncode != 0 and "checkpoint saved" in err, err[-3000:]
    state = json.loads((many_dir / "checkpoint.json").read_text())
    assert 4 <= state["step"] < 300 and not (many_dir / "summary.json").exists()
    train(many, 2, "--resume")
    assert_same_run(many_dir, single_dir)


# Issue 24: a torchrun job stopped at a write of rank 0 (the writer: PRGE_TEST_SIGNAL_AT_WRITE,
# prge.durable) resumes under torchrun to the single-process result, bit for bit.
BOUNDARY_STOPS = ["checkpoint-2: checkpoint.safetensors written", "checkpoint-4: directory in place",
                  "checkpoint-4: current", "trained.safetensors written",
                  "checkpoint-4: state.json written@SIGINT2"]  # a second Ctrl-C during the write


def test_a_torchrun_job_stopped_at_its_writes_resumes_to_the_single_process_result(assets):
    from prge.durable import SIGNAL_AT_WRITE

    tmp, model_dir, data_dir = assets
    over = {"estimator": {"queries": 2}, "run": {"steps": 4, "eval_every": 2, "checkpoint_every": 2}}
    single, single_dir = config_for(tmp, model_dir, data_dir, "boundary-single", **over)
    train(single, 1)
    for i, stop in enumerate(BOUNDARY_STOPS):
        many, many_dir = config_for(tmp, model_dir, data_dir, f"boundary-{i}", **over)
        argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                "-m", "prge", "train", str(many), "--no-progress", "--overwrite"]
        done = subprocess.run(argv, env={**ENV, SIGNAL_AT_WRITE: stop}, capture_output=True, text=True, timeout=600)
        assert done.returncode != 0 and not (many_dir / "summary.json").exists(), (stop, done.stderr[-3000:])
        train(many, 2, "--resume")
        assert_same_run(many_dir, single_dir)
        assert sorted(p.name for p in many_dir.glob("checkpoint-*")) == ["checkpoint-4"], stop


def start_ranks(configs, cwds, timeout=30):
    """Two ranks started by hand with torchrun's environment, rank r reading configs[r] in cwds[r]."""
    port = free_port()
    ranks = []
    for rank in range(2):
        env = {**ENV, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        ranks.append(subprocess.Popen([sys.executable, "-m", "prge", "train", str(configs[rank]), "--no-progress",
                                       "--overwrite", "--rank-timeout", str(timeout)], cwd=cwds[rank],
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outcomes = []
    for process in ranks:
        try:
            _, err = process.communicate(timeout=timeout + 120)
        finally:
            if process.poll() is None:
                process.kill()
        outcomes.append((process.returncode, err))
    return outcomes


def test_ranks_with_other_configs_or_data_stop_naming_the_ranks_and_the_key(assets):
    """A rank with another estimator.queries once aborted the job in gloo (SIGABRT); another
    data.template trained to other weights with exit 0. Now every rank ends with prge: error."""
    import shutil

    tmp, model_dir, data_dir = assets
    first, run_dir = config_for(tmp, model_dir, data_dir, "agree-a", estimator={"queries": 2})
    second = tmp / "agree-b.yaml"
    second.write_text(first.read_text().replace("queries: 2", "queries: 4"))
    for returncode, err in start_ranks([first, second], [tmp, tmp]):
        assert returncode == 2, err[-3000:]
        assert ("prge: error: rank(s) [1] run with another config than rank 0 (first difference: "
                "estimator.queries: 2 on rank 0, 4 on rank 1)") in err, err[-3000:]
        assert "Traceback" not in err
    assert not (run_dir / "summary.json").exists()
    # The same config text, a relative data_dir, each rank in its own working directory whose
    # copy of the data differs in one review.
    homes = [tmp / "home0", tmp / "home1"]
    for home in homes:
        shutil.copytree(data_dir, home / "food")
    train_csv = homes[1] / "food" / "train.csv"
    train_csv.write_text(train_csv.read_text().replace("good", "great", 1))
    relative, _ = config_for(tmp, model_dir, "food", "agree-data")
    for returncode, err in start_ranks([relative, relative], homes):
        assert returncode == 2, err[-3000:]
        assert "prge: error: rank(s) [1] run with other data than rank 0 (first difference: train: " in err, err[-3000:]


def test_a_resumed_run_on_a_gpu_appends_to_its_log(tmp_path, monkeypatch):
    """`prge sweep --gpus` writes each run's output to RUN_DIR.log: a fresh run starts it anew,
    a resumed run goes on after what the interrupted part wrote."""
    import subprocess
    from types import SimpleNamespace

    import prge.sweep_gpus as sweep_gpus

    def fake_train(argv, env, stdout, stderr):
        stdout.write(f"{'resumed' if '--resume' in argv else 'started'} on GPU {env['CUDA_VISIBLE_DEVICES']}\n")
        return SimpleNamespace(wait=lambda: 0, poll=lambda: 0)

    monkeypatch.setattr(subprocess, "Popen", fake_train)
    monkeypatch.setattr(sweep_gpus, "read_summary", lambda path: {"path": str(path)})
    config = SimpleNamespace(run=SimpleNamespace(output_dir=str(tmp_path / "run-a")), to_yaml=lambda: "run: {}\n")
    log = tmp_path / "run-a.log"
    log.write_text("step 1000 before the interruption\n")
    sweep_gpus.run_on_gpus([("(1/1) run-a", config, True)], ["0"], log=lambda *a: None)
    assert log.read_text() == "step 1000 before the interruption\nresumed on GPU 0\n"
    sweep_gpus.run_on_gpus([("(1/1) run-a", config, False)], ["1"], log=lambda *a: None)
    assert log.read_text() == "started on GPU 1\n"


def test_a_failed_run_on_a_gpu_is_marked_with_its_error(tmp_path, monkeypatch):
    """A run that fails under `prge sweep --gpus` is marked in its directory with the last
    `prge: error:` line this attempt wrote to its log (an earlier attempt's error is not taken
    for it), which `prge report` names."""
    import subprocess
    from types import SimpleNamespace

    import prge.sweep_gpus as sweep_gpus
    from prge.reporting.collect import failed

    endings = iter([("prge: error: train split: data.csv:3: 2 fields\n", 2), ("Segmentation fault\n", -11)])

    def fake_train(argv, env, stdout, stderr):
        text, code = next(endings)
        stdout.write("step 1\n" + text)
        stdout.flush()
        return SimpleNamespace(wait=lambda: code, poll=lambda: code)

    monkeypatch.setattr(subprocess, "Popen", fake_train)
    config = SimpleNamespace(run=SimpleNamespace(output_dir=str(tmp_path / "run-a")), to_yaml=lambda: "run: {}\n")
    log = tmp_path / "run-a.log"
    for resume, why in ((False, "train split: data.csv:3: 2 fields"), (True, "exit -11")):
        with pytest.raises(ValueError, match="1 of 1 runs failed"):
            sweep_gpus.run_on_gpus([("(1/1) run-a", config, resume)], ["0"], log=lambda *a: None)
        assert failed(tmp_path) == [f"run-a ({why} (see {log}))"]


def test_a_run_another_process_is_writing_is_left_to_it_under_gpus(tmp_path, monkeypatch):
    """As the sequential sweep: a run directory whose lock another process holds is skipped,
    its log untouched and no failure marked there, and the sweep does not fail for it."""
    import fcntl
    import subprocess
    from types import SimpleNamespace

    import prge.sweep_gpus as sweep_gpus
    from prge.reporting.collect import failed
    from prge.run_dir import LOCK_FILE

    started = []
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: started.append(a) or None)
    out = tmp_path / "run-a"
    out.mkdir()
    (tmp_path / "run-a.log").write_text("the other process's output\n")
    config = SimpleNamespace(run=SimpleNamespace(output_dir=str(out)), to_yaml=lambda: "run: {}\n")
    lines = []
    with open(out / LOCK_FILE, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as claim() holds it while that run writes
        assert sweep_gpus.run_on_gpus([("(1/1) run-a", config, False)], ["0"], log=lines.append) == []
    assert lines == ["[prge] (1/1) run-a: another process is running it, skipping"] and not started
    assert (tmp_path / "run-a.log").read_text() == "the other process's output\n" and failed(tmp_path) == []


SWEEP_CHILD = """
import sys
from prge.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("signalled", ["group", "sweep then group (as timeout sends it)", "sweep alone, twice"])
def test_a_signalled_gpu_sweep_waits_for_its_run_to_checkpoint_then_resumes_it(assets, signalled):
    """SIGTERM to a `prge sweep --gpus` (as `timeout`, a terminal or a scheduler sends it to the
    process group, or `kill PID` twice to the sweep alone, the second passed on to its run): the
    run in flight stops after its step with a checkpoint *before* the sweep exits (a machine
    that ends the job when the sweep ends keeps it), the run not started is named, and the same
    sweep command resumes the first and runs the second."""
    import fcntl

    import yaml

    tmp, model_dir, data_dir = assets
    name = "sigterm-sweep-" + "-".join(signalled.split()[:2])
    base, _ = config_for(tmp, model_dir, data_dir, name, run={"steps": 4000, "eval_every": 0, "log_every": 1})
    spec = tmp / name / "sweep.yaml"
    spec.write_text(yaml.safe_dump({"base": str(base), "grid": {"optimizer.lr": [0.01, 0.02]}}))
    root = tmp / name / "runs"
    argv = [sys.executable, "-c", SWEEP_CHILD, "sweep", str(spec), "--no-progress", "--gpus", "0",
            "--output-root", str(root)]
    sweep = subprocess.Popen(argv, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)  # its own process group, as under `timeout`
    first = root / "run-lr0.01"
    deadline = time.monotonic() + 300
    while not ((first / "metrics.jsonl").is_file() and len((first / "metrics.jsonl").read_text().splitlines()) > 20):
        assert sweep.poll() is None and time.monotonic() < deadline, sweep.communicate()
        time.sleep(0.2)
    if signalled == "group":
        os.killpg(sweep.pid, signal.SIGTERM)
    elif signalled.startswith("sweep then group"):  # one stop, twice at the sweep: not passed on as a second
        os.kill(sweep.pid, signal.SIGTERM)
        os.killpg(sweep.pid, signal.SIGTERM)
    else:
        sweep.send_signal(signal.SIGTERM)  # the sweep alone: it waits for the run...
        time.sleep(1.0)
        assert sweep.poll() is None
        sweep.send_signal(signal.SIGTERM)  # ...and passes the second on to it
    out, err = sweep.communicate(timeout=300)
    # The sweep has ended: its run has ended before it (no process holds the run directory's
    # lock), with its checkpoint whole.
    with open(first / ".prge.lock") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError while the run still runs
    assert sweep.returncode != 0 and (first / "checkpoint.json").is_file(), err[-3000:]
    assert not (first / "summary.json").exists()
    assert ("prge: error: sweep interrupted: 1 run(s) in flight stopped ((1/2) run-lr0.01 (resumes from its "
            "checkpoint; see") in err, err[-3000:]
    assert "1 not started; continue with the same `prge sweep` command" in err, err[-3000:]
    assert "checkpoint saved" in (root / "run-lr0.01.log").read_text()
    again = subprocess.run(argv, env=ENV, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    log = (root / "run-lr0.01.log").read_text()
    assert "checkpoint saved" in log and "resuming after step" in log, log[-3000:]
    assert (first / "summary.json").is_file() and (root / "run-lr0.02" / "summary.json").is_file()


def test_a_signalled_gpu_sweep_tells_failed_finished_stopped_and_unstarted_runs_apart(tmp_path, monkeypatch):
    """Runs as processes faked in this process: one that failed before the signal is a failure,
    one that wrote its summary and was stopped on its way out is finished, the one the signal
    stopped is named with what resuming does, the last one did not start."""
    from pathlib import Path
    from types import SimpleNamespace

    import prge.sweep_gpus as sweep_gpus
    from prge.train import RunInterrupted

    def ending(name, code, signal_first=False, summary=False):
        def wait():
            if signal_first:
                os.kill(os.getpid(), signal.SIGTERM)  # the handler runs in the main thread
                time.sleep(0.5)
            if summary:
                (tmp_path / name / "summary.json").write_text("{}")
            return code
        return wait

    waits = {"a": ending("a", 1), "b": ending("b", -15, signal_first=True, summary=True), "c": ending("c", 0),
             "e": ending("e", 2, signal_first=True)}

    def fake_popen(argv, env, stdout, stderr):
        return SimpleNamespace(wait=waits[Path(argv[4]).stem], poll=lambda: 0, send_signal=lambda sig: None)

    def jobs(names):
        out = []
        for i, name in enumerate(names, 1):
            (tmp_path / name).mkdir(exist_ok=True)
            config = SimpleNamespace(run=SimpleNamespace(output_dir=str(tmp_path / name)), to_yaml=lambda: "run: {}\n")
            out.append((f"({i}/{len(names)}) {name}", config, False))
        return out

    monkeypatch.setattr(subprocess, "Popen", fake_popen)
    lines = []
    with pytest.raises(RunInterrupted) as e:
        sweep_gpus.run_on_gpus(jobs("abc"), ["0"], log=lines.append)
    assert str(e.value).startswith("sweep interrupted: 0 run(s) in flight stopped, 1 not started; 1 had failed "
                                   "before: (1/3) a (exit 1; see "), str(e.value)
    assert [line.split(": ", 1)[1] for line in lines if "started" not in line] == [
        "failed (exit 1) on GPU 0", "finished on GPU 0"], lines
    (tmp_path / "e" / "checkpoint.json").parent.mkdir(exist_ok=True)
    (tmp_path / "e" / "checkpoint.json").write_text("{}")
    with pytest.raises(RunInterrupted) as e:
        sweep_gpus.run_on_gpus(jobs("e"), ["0"], log=lines.append)
    assert str(e.value) == (f"sweep interrupted: 1 run(s) in flight stopped ((1/1) e (resumes from its checkpoint; see "
                            f"{tmp_path / 'e.log'})), 0 not started; continue with the same `prge sweep` command")
    assert lines[-1] == "[prge] (1/1) e: stopped on GPU 0"
