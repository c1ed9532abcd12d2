"""
Tuning at every scale, for real: separate worker processes (the ``sb3-ppo-variants`` command) on a local SQLite
file and on a PostgreSQL server, a worker killed mid-trial, and trials whose training goes non-finite.

The PostgreSQL test needs ``SB3PV_TEST_POSTGRES_URL`` (``.ci/run`` starts a server and sets it); under CI it fails
when the variable is missing rather than skipping.
"""

import contextlib
import csv
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import optuna
import pytest
import yaml
from broken_envs import TRAINING_STARTED
from optuna.trial import TrialState

from sb3_ppo_variants import PPOPenalty
from sb3_ppo_variants.zoo import zoo_hyperparameters
from sb3_ppo_variants.zoo.storage import CONNECTIONS_PER_JOB, POOL_SIZE, make_storage
from sb3_ppo_variants.zoo.validation import Candidate, train_and_evaluate

TESTS = Path(__file__).resolve().parent
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
# Small but real trials: CartPole, 1024 steps, evaluated twice
FAST_TRIAL = ["--env", "CartPole-v1", "-n", "1024", "--n-evaluations", "2", "--eval-episodes", "2", "--num-threads", "1"]
FAST_TRIAL += ["-params", "n_envs:2"]


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "sb3_ppo_variants.zoo", *args]


def _environment() -> dict[str, str]:
    # broken_envs (for --gym-packages) lives next to this file
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}


def _run(args: list[str], cwd: Path, timeout: int = 240) -> subprocess.CompletedProcess:
    result = subprocess.run(_command(*args), cwd=cwd, env=_environment(), capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        _command(*args), cwd=cwd, env=_environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _load(storage: str, study_name: str) -> optuna.Study:
    return optuna.load_study(study_name=study_name, storage=storage)


def test_newcomer_tune_command_writes_a_report(tmp_path):
    # A pinned sampler seed: with a new one per run, all 3 random trials are sometimes pruned (rollouts too large)
    result = _run(["tune", *FAST_TRIAL, "--n-trials", "3", "--seed", "0", "--sampler-seed", "0"], tmp_path)
    study_folder = tmp_path / "logs" / "ppo_penalty" / "ppo_penalty-CartPole-v1"
    study = _load(f"sqlite:///{study_folder / 'study.db'}", "ppo_penalty-CartPole-v1")
    assert len(study.get_trials(states=FINISHED)) == 3
    # 3 trials never leave TPE's 10 random start-up trials: said once
    assert result.stderr.count("ends within the TPE sampler's 10 random start-up trials") == 1
    assert "ExperimentalWarning" not in result.stderr

    # tune trains 3 seeds per trial, the same for every trial; a trial's value is their mean, and so is each report
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert complete
    for trial in complete:
        assert trial.user_attrs["seeds"] == [0, 1, 2]
        values = trial.user_attrs["seed_values"]
        assert len(values) == 3 and trial.value == pytest.approx(sum(values) / 3)
        assert trial.intermediate_values[max(trial.intermediate_values)] == pytest.approx(trial.value)
        trial_folder = study_folder / "trials" / f"trial_{trial.number}"
        assert {path.name for path in trial_folder.iterdir()} >= {"seed_0", "seed_1", "seed_2", "best_model.zip"}
        # The trial's model is that of its seed with the best last evaluation
        best_seed = trial.user_attrs["seeds"][values.index(max(values))]
        best_model = (trial_folder / f"seed_{best_seed}" / "best_model.zip").read_bytes()
        assert (trial_folder / "best_model.zip").read_bytes() == best_model

    report = study_folder / "report"
    table = (report / "trials.csv").read_text()
    assert table.count("\n") == 4  # header + 3 trials
    header = table.splitlines()[0].split(",")
    assert "user_attrs_seed_values" in header and header[-1] == "reason"
    for picture in ("optimization_history.png", "param_importances.png"):
        assert (report / picture).read_bytes()[:4] == b"\x89PNG"
    snippet = (report / "best_hyperparameters.yml").read_text()
    assert snippet.startswith("# Tuned: study 'ppo_penalty-CartPole-v1'")
    entry = yaml.safe_load(snippet)["CartPole-v1"]
    best = study.best_trial
    assert entry["kl_target"] == best.params["kl_target"] and entry["beta"] == best.params["beta"]
    assert ("clip_range" in entry) == best.params["combine_clipping"]
    assert entry["policy_kwargs"].startswith("dict(net_arch=")
    assert "Best trial #" in result.stdout and "CartPole-v1:" in result.stdout
    model = PPOPenalty.load(report / "best_model.zip")
    assert model.kl_target == best.params["kl_target"]


def test_fixed_parameters_hold_in_every_trial_and_in_the_proposed_entry(tmp_path):
    fixed = ["one_minus_gamma:0.1", "n_epochs:1", "n_steps_pow:8", "batch_size_pow:6", "activation_fn:relu"]
    args = ["train", "-optimize", *FAST_TRIAL, "--n-trials", "3", "--n-startup-trials", "0", "--pruner", "none", "--seed", "0"]
    args += ["--no-optim-plots", "--fixed", *fixed]
    result = _run(args, tmp_path)
    # Gamma 0.9 lies outside the zoo's range (>= 0.97): said once, by this command, and no warning of Optuna's
    assert result.stdout.count("--fixed one_minus_gamma:0.1: outside the searched range [0.0001, 0.03]") == 1
    assert "Warning" not in result.stderr, result.stderr[-3000:]
    study_name = "ppo_penalty-CartPole-v1"
    study = _load(f"sqlite:///{tmp_path / 'logs' / 'ppo_penalty' / study_name / 'study.db'}", study_name)
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) == 3
    for trial in trials:
        held = {name: trial.params[name] for name in ("one_minus_gamma", "n_epochs", "n_steps_pow", "activation_fn")}
        assert held == {"one_minus_gamma": 0.1, "n_epochs": 1, "n_steps_pow": 8, "activation_fn": "relu"}
    assert len({trial.params["learning_rate"] for trial in trials}) == 3  # the others are still searched
    report = tmp_path / "logs" / "ppo_penalty" / study_name / "report"
    entry = yaml.safe_load((report / "best_hyperparameters.yml").read_text())["CartPole-v1"]
    assert entry["gamma"] == pytest.approx(0.9) and entry["n_epochs"] == 1 and entry["n_steps"] == 256
    assert "nn.ReLU" in entry["policy_kwargs"]


def test_trials_keep_the_yaml_policy_kwargs_and_trial_id_zero_is_loaded(tmp_path):
    conf = tmp_path / "conf.yml"
    conf.write_text(
        "CartPole-v1:\n  policy: MlpPolicy\n  n_timesteps: 1024\n  clip_range: 0.3\n"
        '  policy_kwargs: "dict(ortho_init=False, log_std_init=-1.5)"\n'
    )
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    common = [*FAST_TRIAL, "--storage", storage, "--study-name", "s", "--conf-file", str(conf)]
    _run(["tune", *common, "--n-trials", "3", "--seed", "3", "--sampler-seed", "3"], tmp_path)
    study = _load(storage, "s")
    # Trials whose sampled rollout is larger than the budget end before training, without a model
    trained = [t.number for t in study.trials if not t.user_attrs.get("pruned_reason", "").startswith("rollout too large")]
    assert trained
    # The sampled network replaces the YAML's policy_kwargs in rl_zoo3; here the YAML keys stay
    for number in trained:
        model = PPOPenalty.load(tmp_path / "logs" / "ppo_penalty" / "s" / "trials" / f"trial_{number}" / "best_model.zip")
        assert model.policy_kwargs["ortho_init"] is False and model.policy_kwargs["log_std_init"] == -1.5
        assert "net_arch" in model.policy_kwargs
        expected_clip = study.trials[number].params["clip_range"] if study.trials[number].params["combine_clipping"] else None
        assert (model.clip_range is None) == (expected_clip is None)

    # --trial-id 0 (which rl_zoo3 alone ignores) trains with trial 0's hyperparameters, on top of the YAML entry
    _run(["train", *common, "--trial-id", "0"], tmp_path)
    (model_path,) = (tmp_path / "logs" / "ppo_penalty").glob("CartPole-v1_*/CartPole-v1.zip")
    trained = PPOPenalty.load(model_path)
    trial = study.trials[0]
    assert trained.kl_target == trial.params["kl_target"] and trained.beta != 1.0
    assert trained.policy_kwargs["ortho_init"] is False and trained.policy_kwargs["log_std_init"] == -1.5
    if trial.params["combine_clipping"]:
        assert trained.clip_range(1.0) == trial.params["clip_range"]
    else:
        assert trained.clip_range is None  # not the YAML's 0.3


def _first_trial_params(cwd: Path, study_name: str, *args: str) -> dict:
    storage = f"sqlite:///{cwd / 'studies.db'}"
    # A 64-step budget: most sampled rollouts are larger and pruned at once, which is all this needs
    common = ["train", "-optimize", "--env", "CartPole-v1", "-n", "64", "--n-trials", "1", "--no-optim-plots"]
    _run([*common, "--storage", storage, "--study-name", study_name, "--seed", "7", *args], cwd)
    return _load(storage, study_name).trials[0].params


def test_workers_sample_with_seeds_of_their_own_unless_pinned(tmp_path):
    # rl_zoo3 alone seeds the sampler with --seed: two workers given one seed would sample the same trials
    assert _first_trial_params(tmp_path, "a") != _first_trial_params(tmp_path, "b")
    pinned = ["--sampler-seed", "11"]
    assert _first_trial_params(tmp_path, "c", *pinned) == _first_trial_params(tmp_path, "d", *pinned)


def test_a_trial_of_several_seeds_is_reproducible(tmp_path):
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    args = ["tune", "--env", "CartPole-v1", "-n", "2048", "--n-evaluations", "1", "--eval-episodes", "2", "--n-trials", "1"]
    args += ["--trial-seeds", "2", "--seed", "5", "--sampler-seed", "9", "--num-threads", "1", "-params", "n_envs:1"]
    args += ["--storage", storage, "--no-optim-plots"]
    trials = []
    for study_name in ("first", "second"):
        _run([*args, "--study-name", study_name], tmp_path)
        (trial,) = _load(storage, study_name).trials
        trials.append(trial)
    assert trials[0].state == TrialState.COMPLETE
    assert trials[0].user_attrs["seeds"] == [5, 6]
    # The same sample, and each seed's training seeded: the same returns
    assert trials[0].params == trials[1].params
    assert trials[0].user_attrs["seed_values"] == trials[1].user_attrs["seed_values"]


def _two_workers_share_one_budget(storage: str, cwd: Path, budget: int = 6) -> None:
    study_name = f"shared-{uuid.uuid4().hex[:8]}"
    args = ["train", "-optimize", *FAST_TRIAL, "--storage", storage, "--study-name", study_name]
    args += ["--max-total-trials", str(budget), "--n-trials", "100", "--no-optim-plots"]
    workers = [_start([*args, "--seed", str(seed)], cwd) for seed in (1, 2)]
    outputs = [worker.communicate(timeout=400)[0] for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]

    study = _load(storage, study_name)
    finished = study.get_trials(states=FINISHED)
    assert len(finished) == budget
    numbers = [trial.number for trial in study.trials]
    assert len(numbers) == len(set(numbers))
    # However the two workers shared the work (one may have run all of it), each finished trial was run once
    finished_by_worker = [set(re.findall(r"Trial (\d+) (?:finished|pruned)", output)) for output in outputs]
    assert sorted(int(number) for done in finished_by_worker for number in done) == sorted(t.number for t in finished)
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
    # A trial that lost a race for the last places of the budget ends at once, and says so
    for trial in study.get_trials(states=(TrialState.FAIL,)):
        assert trial.user_attrs["fail_reason"].startswith("over budget")


def test_two_processes_share_a_sqlite_study(tmp_path):
    _two_workers_share_one_budget(f"sqlite:///{tmp_path / 'study.db'}", tmp_path)


def _postgres_url() -> str:
    url = os.environ.get("SB3PV_TEST_POSTGRES_URL")
    if url is None:
        if os.environ.get("CI"):
            pytest.fail("SB3PV_TEST_POSTGRES_URL is not set: .ci/run starts PostgreSQL and sets it")
        pytest.skip("no PostgreSQL server (set SB3PV_TEST_POSTGRES_URL, see .ci/postgres.sh)")
    return url


def test_two_processes_share_a_postgresql_study(tmp_path):
    _two_workers_share_one_budget(_postgres_url(), tmp_path)


def test_postgresql_connections_are_checked_and_bounded():
    storage = make_storage(_postgres_url(), n_jobs=3)
    pool = storage.engine.pool
    # pool_pre_ping: a connection that the server or a firewall dropped while idle is replaced, not an error
    assert pool._pre_ping is True
    assert pool.size() == POOL_SIZE and pool._max_overflow == CONNECTIONS_PER_JOB * 3
    assert make_storage(_postgres_url(), n_jobs=3) is storage  # one pool per process and URL
    optuna.create_study(storage=storage, study_name=f"pool-{uuid.uuid4().hex[:8]}")


def _wait_for_line(process: subprocess.Popen, marker: str, timeout: float) -> list[str]:
    """:return: The lines the process printed up to the first that contains ``marker`` (reading as they come)"""
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    seen, deadline = [], time.monotonic() + timeout
    while not seen or marker not in seen[-1]:
        try:
            seen.append(lines.get(timeout=max(deadline - time.monotonic(), 0)))
        except queue.Empty:
            process.kill()
            pytest.fail(f"no line with {marker!r} within {timeout} s:\n" + "".join(seen)[-3000:])
    return seen


def test_killed_worker_trial_fails_and_the_study_goes_on(tmp_path):
    storage, study_name = f"sqlite:///{tmp_path / 'study.db'}", "killed"
    heartbeat_interval = 1
    conf = tmp_path / "conf.yml"
    conf.write_text("AnnouncingCartPole-v0:\n  policy: MlpPolicy\n  n_timesteps: 1000000\n")
    common = [
        "train",
        "-optimize",
        "--env",
        "AnnouncingCartPole-v0",
        "--gym-packages",
        "broken_envs",
        "--conf-file",
        str(conf),
    ]
    common += ["--storage", storage, "--study-name", study_name, "--heartbeat-interval", str(heartbeat_interval)]
    common += ["--num-threads", "1", "--no-optim-plots", "--max-total-trials", "2"]
    # A value outside the searched range, which Optuna's retry of the killed trial would reject
    common += ["--fixed", "one_minus_gamma:0.1"]
    # A long trial, killed once it trains (its env prints a line at its first step, after all hyperparameters are sampled)
    worker = _start([*common, "-n", "1000000", "--seed", "1"], tmp_path)
    _wait_for_line(worker, TRAINING_STARTED, timeout=120)
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=30)
    (killed,) = _load(storage, study_name).get_trials(states=(TrialState.RUNNING,))
    assert "combine_clipping" in killed.params  # the last sampled hyperparameter

    # A trial is stale two heartbeat intervals after its last beat: the next worker then fails it and retries it
    time.sleep(2 * heartbeat_interval + 1)
    _run([*common, "-n", "1024", "--n-evaluations", "2", "--eval-episodes", "2", "--seed", "2"], tmp_path)
    study = _load(storage, study_name)
    assert study.trials[killed.number].state == TrialState.FAIL
    assert len(study.get_trials(states=FINISHED)) == 2
    # The dead trial's hyperparameters were retried
    retried = [trial for trial in study.trials if trial.system_attrs.get("failed_trial") == killed.number]
    assert len(retried) == 1 and retried[0].params == killed.params and killed.params["one_minus_gamma"] == 0.1
    # and the report gives the reason that Optuna did not record
    table = (tmp_path / "logs" / "ppo_penalty" / study_name / "report" / "trials.csv").read_text()
    rows = list(csv.DictReader(table.splitlines()))
    assert "stopped sending heartbeats" in rows[killed.number]["reason"]


def test_non_finite_trials_are_pruned_with_their_reason(tmp_path):
    storage, study_name = f"sqlite:///{tmp_path / 'study.db'}", "non-finite"
    args = ["train", "-optimize", "--algo", "ppo_penalty", "--env", "NaNAfterSteps-v0", "--gym-packages", "broken_envs"]
    # A budget of the largest rollout that the search space samples (4096 steps, 1 env): none is pruned before training
    args += ["-n", "4096", "--n-trials", "3", "--storage", storage, "--study-name", study_name, "--no-optim-plots"]
    args += ["--num-threads", "1", "--seed", "0", "--sampler-seed", "0", "-params", "n_envs:1", "n_steps:64", "batch_size:32"]
    # zoo_configs/ has no entry for this env: give one through a file of our own
    conf = tmp_path / "conf.yml"
    conf.write_text("NaNAfterSteps-v0:\n  policy: MlpPolicy\n  n_timesteps: 4096\n")
    args += ["--conf-file", str(conf)]
    _run(args, tmp_path)
    study = _load(storage, study_name)
    assert len(study.trials) == 3
    for trial in study.trials:
        assert trial.state == TrialState.PRUNED
        reason = trial.user_attrs["pruned_reason"]
        assert re.match(r"NonFiniteError: The environment returned non-finite (terminal_)?observation", reason)


def _validation_rows(folder: Path) -> dict[tuple[str, int], float]:
    rows = csv.DictReader((folder / "validation.csv").read_text().splitlines())
    return {(row["candidate"], int(row["seed"])): float(row["final_return"]) for row in rows}


def test_validate_retrains_the_best_trials_on_fresh_seeds(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    tuning = ["--storage", storage, "--study-name", "tuned"]
    _run(["train", "-optimize", *FAST_TRIAL, *tuning, "--n-trials", "3", "--seed", "0", "--no-optim-plots"], tmp_path)
    # The two best, best first; of equal values the earlier trial (CartPole's short trials often tie)
    complete = _load(storage, "tuned").get_trials(states=(TrialState.COMPLETE,))
    best = sorted(complete, key=lambda trial: (-trial.value, trial.number))[:2]

    args = ["validate", "--env", "CartPole-v1", *tuning, "--top", "2", "--seeds", "2", "-n", "1024"]
    result = _run([*args, "--eval-episodes", "2", "--workers", "2", "-f", "logs"], tmp_path)
    folder = tmp_path / "logs" / "ppo_penalty" / "tuned" / "validation"
    returns = _validation_rows(folder)
    names = ["current", *(f"trial-{trial.number}" for trial in best), "sb3-ppo"]
    assert sorted(returns) == sorted((name, seed) for name in names for seed in (1000, 1001))
    # Each run is the candidate's entry trained with its seed: the same as training it here
    current = Candidate("current", "ppo_penalty", {**zoo_hyperparameters("ppo_penalty", "CartPole-v1"), "n_timesteps": 1024})
    assert returns[("current", 1001)] == train_and_evaluate(current, "CartPole-v1", 1001, eval_episodes=2)
    markdown = (folder / "validation.md").read_text()
    assert markdown in result.stdout
    assert "| current | ppo_penalty | 1,024 | 2/2 |" in markdown and "| sb3-ppo | ppo | 1,024 | 2/2 |" in markdown
    assert "# Validated on seeds 1000-1001: " in markdown

    # The same validation study with other seeds would mix two validations: refused, in one line
    other = subprocess.run(
        _command(*args[:-2], "--seeds", "3", "-n", "1024", "-f", "logs"),
        cwd=tmp_path,
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert other.returncode == 2
    assert other.stderr.strip().splitlines() == [other.stderr.strip()]
    assert "exists with other candidates, seeds, budget or episodes" in other.stderr


def test_validate_in_fast_mode_compiles_this_packages_candidates_only(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    args = ["validate", "--env", "CartPole-v1", "--storage", storage, "--study-name", "fast", "--top", "0", "--fast-mode"]
    result = _run([*args, "--seeds", "2", "-n", "256", "--eval-episodes", "2", "--workers", "2"], tmp_path)
    definition = json.loads(_load(storage, "fast-validation").user_attrs["candidates"])
    fast = {candidate["name"]: candidate["entry"].get("fast_mode", False) for candidate in definition}
    assert fast == {"current": True, "sb3-ppo": False}
    assert (
        "| current | ppo_penalty, fast mode | 256 | 2/2 |" in result.stdout
        and "| sb3-ppo | ppo | 256 | 2/2 |" in result.stdout
    )
    # The proposed entry holds hyperparameters, not how the validation ran them
    assert "fast_mode" not in result.stdout.split("```yaml")[1]


def test_a_dead_validation_workers_run_is_retried_by_the_next_worker(tmp_path):
    storage, study_name, heartbeat_interval = f"sqlite:///{tmp_path / 'study.db'}", "dead-worker", 1
    args = ["validate", "--env", "CartPole-v1", "--storage", storage, "--study-name", study_name, "--top", "0", "--no-sb3"]
    args += ["--seeds", "2", "-n", "2048", "--eval-episodes", "1", "--workers", "1", "-f", "logs"]
    args += ["--heartbeat-interval", str(heartbeat_interval)]
    worker = _start(args, tmp_path)
    deadline, running = time.monotonic() + 120, []
    while not running and time.monotonic() < deadline and worker.poll() is None:
        time.sleep(0.05)
        with contextlib.suppress(KeyError):  # not created yet
            running = _load(storage, f"{study_name}-validation").get_trials(states=(TrialState.RUNNING,))
    worker.send_signal(signal.SIGKILL)
    worker.wait(timeout=30)
    assert len(running) == 1, worker.stdout.read()[-3000:] if worker.stdout else ""
    (killed,) = running

    # Two heartbeat intervals later the run is stale: the next worker fails it, queues it again and trains it
    time.sleep(2 * heartbeat_interval + 1)
    result = _run(args, tmp_path)
    study = _load(storage, f"{study_name}-validation")
    assert study.trials[killed.number].state == TrialState.FAIL
    retried = [trial for trial in study.trials if trial.system_attrs.get("failed_trial") == killed.number]
    assert len(retried) == 1 and retried[0].state == TrialState.COMPLETE
    assert retried[0].params == {"run": killed.system_attrs["fixed_params"]["run"]}  # the same run, queued again
    assert sorted(trial.params["run"] for trial in study.get_trials(states=(TrialState.COMPLETE,))) == [0, 1]
    assert "| current | ppo_penalty | 2,048 | 2/2 |" in result.stdout


def test_validation_workers_on_two_machines_share_a_postgresql_queue(tmp_path):
    url, study_name = _postgres_url(), f"validate-{uuid.uuid4().hex[:8]}"
    args = ["validate", "--env", "CartPole-v1", "--storage", url, "--study-name", study_name, "--top", "0"]
    args += ["--seeds", "3", "-n", "512", "--eval-episodes", "1", "--workers", "1", "-f", "logs"]
    # Two workers started together, as on two machines: one defines the runs, both take them from the queue
    workers = [_start(args, tmp_path) for _ in range(2)]
    outputs = [worker.communicate(timeout=400)[0] for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    study = _load(url, f"{study_name}-validation")
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert sorted(trial.params["run"] for trial in complete) == list(range(6))  # 2 candidates x 3 seeds, each run once
    finished_by_worker = [set(re.findall(r"Trial (\d+) finished", output)) for output in outputs]
    assert all(finished_by_worker) and not finished_by_worker[0] & finished_by_worker[1]
    assert all("| current | ppo_penalty |" in output for output in outputs)
