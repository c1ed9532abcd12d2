"""
The tuning command's flow, in-process: arguments and storages refused with one line, the reasons in ``trials.csv``,
sampled rollouts larger than the budget, ``enjoy`` after a study, the lockstep seeds of a multi-seed trial, and the
validation's statistics and proposal.
"""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch as th
from optuna.trial import TrialState, create_trial
from scipy import stats
from stable_baselines3.common.env_util import make_vec_env

from sb3_ppo_variants import PPOPenalty
from sb3_ppo_variants.common.finite import NonFiniteError
from sb3_ppo_variants.zoo.cli import _own_arguments, argument_error, main
from sb3_ppo_variants.zoo.experiment import _checked_sampler
from sb3_ppo_variants.zoo.registration import zoo_hyperparameters
from sb3_ppo_variants.zoo.report import trial_reason, trials_table
from sb3_ppo_variants.zoo.runs import algorithm_class
from sb3_ppo_variants.zoo.search_spaces import SAMPLERS, fixed_parameters, search_space
from sb3_ppo_variants.zoo.seeds import LockstepSeeds, SeedFailedError, parallel_seeds
from sb3_ppo_variants.zoo.storage import (
    FIRST_HEARTBEAT_ALLOWANCE_S,
    NO_FIRST_HEARTBEAT,
    StorageError,
    fail_dead_trials,
    make_storage,
)
from sb3_ppo_variants.zoo.validation import (
    CURRENT,
    SB3_PPO,
    Candidate,
    open_validation,
    proposal,
    proposed_snippet,
    summarize,
    work,
)


def _one_line_error(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert captured.out == ""  # nothing of rl_zoo3's (its hyperparameter dump) before the error
    return lines[0]


@pytest.mark.parametrize(
    "argv, expected",
    [
        (
            ["tune", "--max-total-trials", "-3"],
            "--max-total-trials must be an integer >= 1 (trials in the whole study), got -3",
        ),
        (["tune", "--max-total-trials", "0"], "--max-total-trials must be an integer >= 1"),
        (["train", "-optimize", "--n-trials", "-1"], "--n-trials must be an integer >= 1 (trials per worker), got -1"),
        (["tune", "--n-evaluations", "0"], "--n-evaluations must be an integer >= 1"),
        (["tune", "--n-jobs", "0"], "--n-jobs must be an integer >= 1"),
        (["tune", "--n-startup-trials", "-2"], "--n-startup-trials must be an integer >= 0"),
        (["tune", "-n", "0"], "--n-timesteps must be an integer >= 1 (steps per training run), or -1"),
        (["tune", "--trial-seeds", "0"], "--trial-seeds must be an integer >= 1 (seeds per trial), got 0"),
        (["tune", "--sampler-seed", "-5"], "--sampler-seed must be an integer >= 0, got -5"),
        (["tune", "--heartbeat-interval", "0"], "--heartbeat-interval must be an integer >= 1 (seconds), got 0"),
        # The last value of a flag is the one rl_zoo3 uses
        (["tune", "--n-trials", "5", "--n-trials=-4"], "--n-trials must be an integer >= 1 (trials per worker), got -4"),
        (["train", "--fixed", "n_epochs:1"], "--fixed holds parameters of a hyperparameter search: use it with tune"),
        (["tune", "--fixed", "gamma:0.9"], "--fixed gamma:0.9: the search space has no 'gamma'; it has activation_fn, "),
        (["tune", "--fixed", "n_epochs"], "--fixed takes NAME:VALUE pairs (e.g. one_minus_gamma:0.1), got 'n_epochs'"),
        (["tune", "--fixed", "n_epochs:3"], "--fixed n_epochs:3: n_epochs is one of 1, 5, 10, 20"),
        (["tune", "--fixed", "n_steps_pow:9.5"], "--fixed n_steps_pow:9.5: n_steps_pow must be an integer"),
        (["tune", "--fixed", "ent_coef:0"], "--fixed ent_coef:0: ent_coef must be finite, > 0 on its log scale"),
        (["tune", "--fixed", "max_grad_norm:inf"], "--fixed max_grad_norm:inf: max_grad_norm must be finite"),
        (["tune", "--fixed", "beta:1", "beta:2"], "--fixed beta:2: beta is given twice"),
        (["tune", "--fixed", "beta:1", "--env", "Pendulum-v1", "--fixed", "beta:2"], "--fixed beta:2: beta is given twice"),
        (["enjoy", "--fixed", "beta:1"], "--fixed holds parameters of a hyperparameter search: use it with tune"),
        (["tune", "--algo", "ppo_clip", "--fixed", "kl_target:0.01"], "the search space has no 'kl_target'"),
    ],
)
def test_out_of_range_arguments_exit_with_one_line(capsys, argv, expected):
    line = _one_line_error(capsys, argv)
    assert line.startswith(f"sb3-ppo-variants {argv[0]}: error: ")
    assert expected in line


@pytest.mark.parametrize(
    "url, expected",
    [
        ("postgres://user:secret@localhost/db", "postgresql://, not postgres://"),
        ("not a url", "is not a database URL: use sqlite:///path.db, postgresql://"),
        ("mysql://user@localhost/db", "needs a database driver that is not installed"),
    ],
)
def test_storage_errors_are_one_line_with_the_fix(capsys, url, expected):
    line = _one_line_error(capsys, ["tune", "--env", "CartPole-v1", "--storage", url])
    assert expected in line
    assert "secret" not in line


def test_fixed_values_are_parsed_by_their_distribution():
    space = search_space(SAMPLERS["ppo_penalty"])
    specs = ["one_minus_gamma:0.1", "n_steps_pow:10", "combine_clipping:False", "net_arch:small", "learning_rate:3e-4"]
    fixed, notes = fixed_parameters(specs, space)
    assert fixed == {
        "one_minus_gamma": 0.1,
        "n_steps_pow": 10,
        "combine_clipping": False,
        "net_arch": "small",
        "learning_rate": 3e-4,
    }
    assert [type(fixed[name]) for name in ("n_steps_pow", "combine_clipping")] == [int, bool]
    # Only the value outside its searched range gets a note; the ends of a range are inside it
    assert notes == ["--fixed one_minus_gamma:0.1: outside the searched range [0.0001, 0.03], used as given"]
    assert fixed_parameters(["n_steps_pow:12", "one_minus_gamma:0.03"], space)[1] == []
    assert fixed_parameters(["n_steps_pow:13"], space)[1] == [
        "--fixed n_steps_pow:13: outside the searched range [5, 12], used as given"
    ]


def test_an_unreachable_storage_is_one_line(tmp_path):
    with pytest.raises(StorageError, match=r"cannot be opened: unable to open database file"):
        make_storage(f"sqlite:///{tmp_path / 'missing-folder' / 'study.db'}")


def test_a_process_opens_one_storage_per_url(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    assert make_storage(url) is make_storage(url)


def test_a_trial_whose_worker_died_before_its_first_heartbeat_is_failed_and_retried(tmp_path, monkeypatch):
    # SQLite's lock timeout (60 s) beyond the grace period, shortened here to 1 s
    monkeypatch.setitem(FIRST_HEARTBEAT_ALLOWANCE_S, "sqlite", 1.0)
    storage = make_storage(f"sqlite:///{tmp_path / 'study.db'}", heartbeat_interval=1)
    study = optuna.create_study(storage=storage, study_name="died-early", direction="maximize")
    other_study = optuna.create_study(storage=storage, study_name="another", direction="maximize")
    distributions = {"x": optuna.distributions.FloatDistribution(0, 1)}
    study.enqueue_trial({"x": 0.25})
    # Two trials without a heartbeat yet: the orphan's worker is killed right after creating it, the other one's beats
    orphan, alive = study.ask(distributions), study.ask(distributions)
    study.enqueue_trial({"x": 0.5})  # queued, not running: never failed
    other_study.ask(distributions)  # another study's: not this one's to fail
    first_seen: dict[int, float] = {}
    fail_dead_trials(study, first_seen)
    assert [trial.state for trial in study.trials] == [TrialState.RUNNING] * 2 + [TrialState.WAITING]  # first seen now
    assert sorted(first_seen) == [orphan._trial_id, alive._trial_id]

    # Past the grace period (2 s) but within the allowance for a first heartbeat (1 s more): not yet
    time.sleep(2 * storage.get_heartbeat_interval() + 0.2)
    storage.record_heartbeat(alive._trial_id)
    fail_dead_trials(study, first_seen)
    assert [trial.state for trial in study.trials] == [TrialState.RUNNING] * 2 + [TrialState.WAITING]
    time.sleep(1.0)
    storage.record_heartbeat(alive._trial_id)
    fail_dead_trials(study, first_seen)
    assert [trial.state for trial in study.trials[:3]] == [TrialState.FAIL, TrialState.RUNNING, TrialState.WAITING]
    assert study.trials[0].user_attrs["fail_reason"] == NO_FIRST_HEARTBEAT
    (retried,) = study.trials[3:]
    assert retried.state == TrialState.WAITING and retried.system_attrs["failed_trial"] == orphan.number
    assert retried.params == {"x": 0.25} and "fail_reason" not in retried.user_attrs
    assert first_seen == {}
    assert [trial.state for trial in other_study.trials] == [TrialState.RUNNING]


def test_a_stale_trial_with_a_fixed_value_outside_its_distribution_is_retried_with_that_value(tmp_path):
    storage = make_storage(f"sqlite:///{tmp_path / 'study.db'}", heartbeat_interval=1)
    fixed = {"one_minus_gamma": 0.1, "n_steps_pow": 13}
    sampler = optuna.samplers.PartialFixedSampler(fixed, optuna.samplers.RandomSampler(seed=0))
    study = optuna.create_study(storage=storage, study_name="fixed", sampler=sampler, direction="maximize")

    def objective(trial: optuna.Trial) -> float:
        return trial.suggest_float("one_minus_gamma", 1e-4, 0.03, log=True) + trial.suggest_int("n_steps_pow", 5, 12)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # Optuna's: the fixed value lies outside the distribution
        dead = study.ask()
        objective(dead)  # its worker then dies
        storage.record_heartbeat(dead._trial_id)
        # SQLite keeps heartbeats to the second: a second beyond the grace period
        time.sleep(2 * storage.get_heartbeat_interval() + 1.2)
        # Optuna's own retry raises here ("isn't contained in the distribution"), and takes the worker with it
        study.optimize(objective, n_trials=1)
    failed, retried = study.trials
    assert failed.state == TrialState.FAIL and retried.system_attrs["failed_trial"] == failed.number
    assert retried.state == TrialState.COMPLETE and retried.params == failed.params
    assert retried.params == fixed
    assert retried.distributions == {
        "one_minus_gamma": optuna.distributions.FloatDistribution(1e-4, 0.1, log=True),
        "n_steps_pow": optuna.distributions.IntDistribution(5, 13),
    }


def test_a_validation_run_whose_worker_died_before_its_first_heartbeat_is_trained_by_the_next_worker(tmp_path, monkeypatch):
    monkeypatch.setitem(FIRST_HEARTBEAT_ALLOWANCE_S, "sqlite", 0.0)  # SQLite's lock timeout, 60 s, not waited for here
    url, heartbeat_interval = f"sqlite:///{tmp_path / 'study.db'}", 1
    candidate = Candidate(CURRENT, "ppo_penalty", {**zoo_hyperparameters("ppo_penalty", "CartPole-v1"), "n_timesteps": 512})
    study = open_validation(make_storage(url, heartbeat_interval), "early", "CartPole-v1", [candidate], [1000], 1)
    orphan = study.ask()  # the only run, taken by a worker killed before the run's first heartbeat
    threads = th.get_num_threads()
    # In a thread, so that a worker that waits for the orphan for ever fails the test instead of hanging it
    worker = threading.Thread(target=work, args=(url, "early", heartbeat_interval), daemon=True)
    worker.start()
    worker.join(timeout=120)
    th.set_num_threads(threads)
    assert not worker.is_alive(), "the worker still waits for the run whose worker died"
    trials = optuna.load_study(study_name="early", storage=url).trials
    assert [trial.state for trial in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert trials[1].system_attrs["failed_trial"] == orphan.number and trials[1].params == {"run": 0}


def test_report_only_reads_a_validation_part_way_and_takes_no_run(tmp_path, monkeypatch, capsys):
    from sb3_ppo_variants.zoo.report import without_run_options
    from sb3_ppo_variants.zoo.validation import RUN

    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    args = ["validate", "--env", "CartPole-v1", "--storage", url, "--study-name", "s", "--top", "0", "--no-sb3"]
    args += ["--seeds", "2", "-n", "64", "--report-only"]
    line = _one_line_error(capsys, args)
    assert line.endswith("no validation study s-validation in " + url + " to report: start it without --report-only")

    entry = {**without_run_options(zoo_hyperparameters("ppo_penalty", "CartPole-v1")), "n_timesteps": 64}
    study = open_validation(
        make_storage(url), "s-validation", "CartPole-v1", [Candidate(CURRENT, "ppo_penalty", entry)], [1000, 1001], 10
    )
    run = study.ask()  # seed 1000's run (queued first), done
    run.suggest_int(RUN, 0, 1)
    study.tell(run, 42.0)
    main(args)
    out = capsys.readouterr().out
    assert "| current | ppo_penalty | 64 | 1/2 | 42.0 ± inf |" in out
    assert "# Part way, 1 of 2 runs done, on seeds 1000-1001: keep the current entry" in out
    assert [trial.state for trial in study.trials] == [TrialState.COMPLETE, TrialState.WAITING]  # nothing trained


def test_validation_runs_are_queued_seed_by_seed():
    from sb3_ppo_variants.zoo.validation import RUN

    found = [Candidate(name, "ppo_penalty", {"n_timesteps": 64}) for name in (CURRENT, "trial-4", SB3_PPO)]
    seeds = [1000, 1001]
    study = open_validation(optuna.storages.InMemoryStorage(), "order", "CartPole-v1", found, seeds, 1)
    taken = []
    for _ in range(len(found) * len(seeds)):
        run = study.ask().suggest_int(RUN, 0, len(found) * len(seeds) - 1)
        taken.append((found[run // len(seeds)].name, seeds[run % len(seeds)]))
    # A validation stopped after k runs has compared the candidates on the same seeds
    assert taken == [(name, seed) for seed in seeds for name in (CURRENT, "trial-4", SB3_PPO)]


def _study_with_every_state() -> optuna.Study:
    study = optuna.create_study(direction="maximize")
    distributions = {"x": optuna.distributions.FloatDistribution(0, 1)}
    trials = [
        create_trial(state=TrialState.COMPLETE, value=1.0, params={"x": 0.5}, distributions=distributions),
        create_trial(state=TrialState.FAIL, params={"x": 0.1}, distributions=distributions),
        create_trial(state=TrialState.FAIL, user_attrs={"fail_reason": "RuntimeError: boom"}),
        create_trial(state=TrialState.PRUNED, intermediate_values={1: 3.0, 2: 2.0}),
        create_trial(state=TrialState.PRUNED, user_attrs={"pruned_reason": "rollout too large: n_steps 2048"}),
    ]
    for trial in trials:
        study.add_trial(trial)
    return study


def test_importances_are_plotted_for_the_searched_parameters_only(tmp_path, monkeypatch):
    import optuna.visualization.matplotlib as optuna_plots

    from sb3_ppo_variants.zoo.report import _save_plots

    study = optuna.create_study(direction="maximize")
    distributions = {"held": optuna.distributions.FloatDistribution(0, 1), "x": optuna.distributions.FloatDistribution(0, 1)}
    for x in (0.1, 0.5, 0.9):
        study.add_trial(create_trial(value=x, params={"held": 0.3, "x": x}, distributions=distributions))
    study.add_trial(create_trial(state=TrialState.PRUNED, params={"held": 0.7, "x": 0.2}, distributions=distributions))
    asked = []
    original = optuna_plots.plot_param_importances
    monkeypatch.setattr(
        optuna_plots, "plot_param_importances", lambda study, params: asked.append(params) or original(study, params=params)
    )
    written = _save_plots(study, str(tmp_path))
    # "held" takes one value in the complete trials (a --fixed parameter): an evaluator would still give it a share
    assert asked == [["x"]] and str(tmp_path / "param_importances.png") in written


def test_every_pruned_or_failed_trial_has_a_reason_in_the_table():
    study = _study_with_every_state()
    reasons = [trial_reason(trial) for trial in study.trials]
    assert reasons[0] == ""
    assert "stopped sending heartbeats" in reasons[1]  # failed by Optuna's stale-trial check, which records nothing
    assert reasons[2] == "RuntimeError: boom"
    assert reasons[3] == "pruned by the pruner after evaluation 2"
    assert reasons[4] == "rollout too large: n_steps 2048"
    table = trials_table(study)
    assert list(table["reason"]) == reasons
    assert list(table["state"]) == ["COMPLETE", "FAIL", "FAIL", "PRUNED", "PRUNED"]


@pytest.mark.parametrize("n_steps, n_envs, pruned", [(1024, 8, True), (256, 8, False), (2048, 1, False), (2049, 1, True)])
def test_a_sampled_rollout_larger_than_the_budget_is_pruned_at_once(n_steps, n_envs, pruned):
    sampler = _checked_sampler(lambda trial, *args: {"n_steps": n_steps}, None, n_envs=n_envs, n_timesteps=2048)
    trial = optuna.trial.FixedTrial({})
    if not pruned:
        assert sampler(trial, 2, n_envs, {}) == {"n_steps": n_steps}
        return
    with pytest.raises(optuna.TrialPruned, match=rf"rollout too large: n_steps {n_steps} x {n_envs} envs"):
        sampler(trial, 2, n_envs, {})
    assert trial.user_attrs["pruned_reason"].endswith("more than the trial's budget of 2048 steps")


def test_enjoy_after_a_study_loads_the_newest_trained_model(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    main(["train", "--algo", "ppo_clip", "--env", "CartPole-v1", "-n", "256", "-f", "logs", "--eval-freq", "-1"])
    # What a study leaves next to it: a newer experiment folder without a model
    (tmp_path / "logs" / "ppo_clip" / "CartPole-v1_2" / "CartPole-v1").mkdir(parents=True)
    capsys.readouterr()
    main(["enjoy", "--algo", "ppo_clip", "--env", "CartPole-v1", "-f", "logs", "--no-render", "-n", "50"])
    output = capsys.readouterr().out
    assert "Loading experiment 1, the newest with CartPole-v1.zip" in output
    assert "CartPole-v1_1/CartPole-v1.zip" in output


def test_enjoy_without_any_trained_model_says_where_the_studys_model_is(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "logs" / "ppo_penalty" / "CartPole-v1_1").mkdir(parents=True)
    report = tmp_path / "logs" / "ppo_penalty" / "ppo_penalty-CartPole-v1" / "report"
    report.mkdir(parents=True)
    (report / "best_model.zip").write_bytes(b"")
    line = _one_line_error(capsys, ["enjoy", "--env", "CartPole-v1", "-f", "logs", "--no-render"])
    assert "no experiment in logs/ppo_penalty/CartPole-v1_<n> holds CartPole-v1.zip" in line
    assert "logs/ppo_penalty/ppo_penalty-CartPole-v1/report/best_model.zip" in line


# Lockstep seeds, with real (small) trainings in forked processes
EVAL_FREQ = 32  # callback calls (steps of the VecEnv) between evaluations
N_EVALUATIONS = 3


def _train(seed: int, callback, misbehave: dict[int, str] | None = None) -> None:
    behaviour = (misbehave or {}).get(seed)
    if behaviour == "raises before training":
        raise NonFiniteError("the environment returned non-finite observations")
    if behaviour == "dies":
        os.kill(os.getpid(), signal.SIGKILL)
    model = PPOPenalty("MlpPolicy", make_vec_env("CartPole-v1", n_envs=1, seed=seed), n_steps=32, batch_size=32, seed=seed)
    model.learn(EVAL_FREQ * N_EVALUATIONS, callback=callback)


def _callback_kwargs(seed: int) -> dict:
    return {"eval_env": make_vec_env("CartPole-v1", n_envs=1, seed=seed + 100), "eval_freq": EVAL_FREQ, "n_eval_episodes": 2}


def test_seeds_report_each_evaluation_in_lockstep():
    runs = LockstepSeeds(_train, [0, 1, 2], _callback_kwargs, parallel=2)
    evaluations = []
    for values in runs.evaluations():
        evaluations.append(values)
        runs.answer(True)
    runs.stop()
    assert len(evaluations) == N_EVALUATIONS and all(len(values) == 3 for values in evaluations)
    # Each seed trains its own model: the seeds' returns are not all the same
    assert len({tuple(values) for values in np.array(evaluations).T}) > 1


def test_seeds_stop_when_told_to():
    runs = LockstepSeeds(_train, [0, 1], _callback_kwargs, parallel=1)
    evaluations = runs.evaluations()
    next(evaluations)
    runs.answer(False)
    assert all(not process.is_alive() for process in runs._processes)
    assert all(process.exitcode == 0 for process in runs._processes)


@pytest.mark.parametrize(
    "behaviour, error_type, kind",
    [("raises before training", "NonFiniteError", "non-finite"), ("dies", "ProcessExited", "failure")],
)
@pytest.mark.parametrize("parallel", [1, 3])
def test_a_seed_that_fails_fails_the_trial_and_stops_the_others(behaviour, error_type, kind, parallel):
    # With one place at the gate, the seed dies holding it while the others wait for it: no wait may hang
    signal.alarm(120)
    try:
        runs = LockstepSeeds(
            lambda seed, callback: _train(seed, callback, {1: behaviour}), [0, 1, 2], _callback_kwargs, parallel
        )
        with pytest.raises(SeedFailedError, match=r"seed 1: ") as failure:
            for _ in runs.evaluations():
                runs.answer(True)
    finally:
        signal.alarm(0)
    assert (failure.value.error_type, failure.value.kind) == (error_type, kind)
    assert all(not process.is_alive() for process in runs._processes)


TRIAL_PROCESS = """
import sys, time
sys.path.insert(0, {tests!r})
from test_tuning_flow import _callback_kwargs, _train
from sb3_ppo_variants.zoo.seeds import LockstepSeeds
runs = LockstepSeeds(_train, [0, 1], _callback_kwargs, parallel=1)
next(runs.evaluations())
print("seeds:", *(process.pid for process in runs._processes), flush=True)
time.sleep(600)
"""


def _has_ended(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "State:\tZ" in status  # ended, not yet reaped


@pytest.mark.skipif(not Path("/proc").exists(), reason="reads process states from /proc")
def test_seeds_end_when_the_trials_process_is_killed():
    code = TRIAL_PROCESS.format(tests=str(Path(__file__).parent))
    trial_process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    line = ""
    while not line.startswith("seeds:"):
        line = trial_process.stdout.readline()
    seed_pids = [int(pid) for pid in line.split()[1:]]
    assert len(seed_pids) == 2
    trial_process.kill()  # SIGKILL: no cleanup runs in the trial's process
    trial_process.wait()
    deadline = time.monotonic() + 30
    while not all(_has_ended(pid) for pid in seed_pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    # One seed waited for the answer, the other for its place at the gate: both noticed
    assert all(_has_ended(pid) for pid in seed_pids)


def test_parallel_seeds_share_the_cores_among_parallel_trials():
    cores = len(os.sched_getaffinity(0))
    assert parallel_seeds(3) == min(3, cores)
    assert parallel_seeds(3, n_jobs=cores) == 1
    assert parallel_seeds(1, n_jobs=1) == 1


# The validation's statistics and proposal, on made-up returns
def _validation_study(returns: dict[str, list[float]]) -> optuna.Study:
    from sb3_ppo_variants.zoo.validation import RUN

    study = optuna.create_study(direction="maximize")
    found = [Candidate(name, "ppo" if name == SB3_PPO else "ppo_penalty", {"n_timesteps": 1000}) for name in returns]
    seeds = list(range(1000, 1000 + len(next(iter(returns.values())))))
    study.set_user_attr("candidates", json.dumps([dataclasses.asdict(candidate) for candidate in found]))
    study.set_user_attr("seeds", seeds)
    study.set_user_attr("env_id", "CartPole-v1")
    study.set_user_attr("eval_episodes", 5)
    distribution = {RUN: optuna.distributions.IntDistribution(0, len(found) * len(seeds) - 1)}
    for candidate_index, values in enumerate(returns.values()):
        for seed_index, value in enumerate(values):
            run = candidate_index * len(seeds) + seed_index
            study.add_trial(create_trial(value=value, params={RUN: run}, distributions=distribution))
    return study


def test_validation_statistics_are_welchs_test_and_the_t_interval():
    current, trial, sb3 = [100.0, 120.0, 110.0, 130.0], [150.0, 170.0, 160.0, 155.0], [90.0, 95.0, 140.0, 100.0]
    summaries, seeds = summarize(_validation_study({CURRENT: current, "trial-3": trial, SB3_PPO: sb3}))
    assert seeds == [1000, 1001, 1002, 1003]
    by_name = {summary.candidate.name: summary for summary in summaries}
    assert by_name["trial-3"].mean == pytest.approx(np.mean(trial))
    half_width = stats.t.ppf(0.975, 3) * np.std(trial, ddof=1) / 2
    assert by_name["trial-3"].half_width == pytest.approx(half_width)
    assert by_name["trial-3"].p_current == pytest.approx(stats.ttest_ind(trial, current, equal_var=False).pvalue)
    assert by_name["trial-3"].p_sb3 == pytest.approx(stats.ttest_ind(trial, sb3, equal_var=False).pvalue)
    assert by_name[CURRENT].p_current is None and by_name[SB3_PPO].p_sb3 is None
    chosen = proposal(summaries)
    assert chosen.candidate.name == "trial-3"
    snippet = proposed_snippet(chosen, summaries, seeds, "CartPole-v1")
    assert "trial-3: mean 158.8" in snippet and "(beyond noise, Welch p = " in snippet


@pytest.mark.parametrize(
    "trial_returns, expected",
    [
        ([90.0, 100.0, 95.0], CURRENT),  # worse than the current entry: never proposed
        ([101.0, 99.0, 112.0], "trial-1"),  # better, within noise: proposed, and said to be within noise
    ],
)
def test_a_tuned_candidate_is_proposed_only_if_it_beats_the_current_entry(trial_returns, expected):
    summaries, seeds = summarize(
        _validation_study({CURRENT: [100.0, 105.0, 98.0], "trial-1": trial_returns, SB3_PPO: [1.0, 2.0, 3.0]})
    )
    chosen = proposal(summaries)
    assert chosen.candidate.name == expected
    snippet = proposed_snippet(chosen, summaries, seeds, "CartPole-v1")
    assert ("keep the current entry" in snippet) == (expected == CURRENT)
    assert ("within noise" in snippet) == (expected != CURRENT)


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--seeds", "1"], "--seeds must be an integer >= 2 (seeds per candidate), got 1"),
        (["--top", "-1"], "--top must be an integer >= 0 (best trials), got -1"),
        (["--workers", "0"], "--workers must be an integer >= 1 (processes on this machine), got 0"),
        ([], "no study at sqlite:///"),
        (["--storage", "postgres://u:p@h/d", "--top", "0"], "postgresql://, not postgres://"),
        (["--top", "0", "--trials", "3"], "give --top (the best trials) or --trials (trials by number), not both"),
        (["--trials", "3"], "no study at sqlite:///"),
    ],
)
def test_validate_refuses_bad_arguments_with_one_line(tmp_path, monkeypatch, capsys, args, expected):
    monkeypatch.chdir(tmp_path)
    line = _one_line_error(capsys, ["validate", "--env", "CartPole-v1", *args])
    assert line.startswith("sb3-ppo-variants validate: error: ") and expected in line
    assert not list(tmp_path.rglob("*.db"))  # refused before any storage is made


def test_zoo_flags_that_start_like_ours_reach_rl_zoo3():
    own, rest = _own_arguments("tune", ["--sampler", "random", "--trial", "0", "--sampler-seed", "3"])
    assert rest == ["--sampler", "random", "--trial", "0"]  # rl_zoo3's --sampler and --trial-id, not ours
    assert (own.sampler_seed, own.trial_seeds) == (3, 3)
    assert argument_error(["-n", "-1"]) is None  # -1: the YAML entry's budget, rl_zoo3's default


def test_a_non_integer_of_ours_is_one_line(capsys):
    line = _one_line_error(capsys, ["tune", "--trial-seeds", "x"])
    assert line == "sb3-ppo-variants tune: error: --trial-seeds must be an integer, got 'x'"


def test_runs_of_equal_returns_are_compared_as_such():
    summaries, _ = summarize(
        _validation_study({CURRENT: [500.0, 500.0, 500.0], "trial-1": [500.0, 500.0, 500.0], SB3_PPO: [200.0] * 3})
    )
    by_name = {summary.candidate.name: summary for summary in summaries}
    assert by_name["trial-1"].p_current == 1.0 and by_name["trial-1"].p_sb3 == 0.0
    assert proposal(summaries).candidate.name == CURRENT  # a tie does not replace the current entry


def _sampled_study(values: list[float]) -> optuna.Study:
    from sb3_ppo_variants.zoo.search_spaces import sample_ppo_penalty_params

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))
    for value in values:
        trial = study.ask()
        sample_ppo_penalty_params(trial, n_actions=1, n_envs=8, additional_args={})
        study.tell(trial, value)
    trial = study.ask()
    sample_ppo_penalty_params(trial, n_actions=1, n_envs=8, additional_args={})
    study.tell(trial, state=TrialState.PRUNED)
    return study


def test_validate_takes_the_best_trials_or_the_ones_named():
    from sb3_ppo_variants.zoo.validation import candidates

    study = _sampled_study([10.0, 30.0, 20.0, 5.0])

    def names(**choice) -> list[str]:
        return [candidate.name for candidate in candidates("ppo_penalty", "CartPole-v1", study, **choice)]

    assert names(top=2) == [CURRENT, "trial-1", "trial-2", SB3_PPO]
    assert names(top=2, trial_numbers=[3, 0]) == [CURRENT, "trial-3", "trial-0", SB3_PPO]
    by_name = {c.name: c for c in candidates("ppo_penalty", "CartPole-v1", study, top=0, trial_numbers=[3])}
    assert by_name["trial-3"].tuning_value == 5.0
    assert by_name["trial-3"].entry["learning_rate"] == study.trials[3].params["learning_rate"]
    with pytest.raises(
        ValueError, match=r"--trials must name complete trials of study .* best: \[1, 2, 0, 3\]\), got \[4, 9\]"
    ):
        candidates("ppo_penalty", "CartPole-v1", study, top=3, trial_numbers=[4, 9])
    with pytest.raises(ValueError, match=r"--trials must name each trial once, got \[3, 0, 3\]"):
        candidates("ppo_penalty", "CartPole-v1", study, top=3, trial_numbers=[3, 0, 3])


def test_runs_build_any_algorithm_of_the_zoos_table_by_name():
    from rl_zoo3.utils import ALGOS
    from sb3_contrib import TRPO
    from stable_baselines3 import PPO

    assert [algorithm_class(name) for name in ("ppo", "trpo", "ppo_penalty", "a2c")] == [PPO, TRPO, PPOPenalty, ALGOS["a2c"]]
    with pytest.raises(ValueError, match=r"algo must be one of \[.*'ppo_clip'.*\], got 'ppo_clipped'"):
        algorithm_class("ppo_clipped")


def test_a_fast_mode_candidate_is_built_with_fast_mode(monkeypatch):
    from sb3_ppo_variants.zoo import validation

    built = []

    def recording_class(algo: str):
        def build(*args, **kwargs):
            model = algorithm_class(algo)(*args, **kwargs)
            model.learn = lambda total_timesteps: model  # the compiled training itself is tested in test_fast.py
            built.append(model)
            return model

        return build

    monkeypatch.setattr(validation, "algorithm_class", recording_class)
    current = Candidate(CURRENT, "ppo_penalty", {**zoo_hyperparameters("ppo_penalty", "CartPole-v1"), "n_timesteps": 64})
    sb3 = Candidate(SB3_PPO, "ppo", {"policy": "MlpPolicy", "n_timesteps": 64})
    for candidate in validation.in_fast_mode([current, sb3]):
        validation.train_and_evaluate(candidate, "CartPole-v1", seed=0, eval_episodes=1)
    assert [type(model).__name__ for model in built] == ["PPOPenalty", "PPO"]
    assert built[0].fast_mode and "fast_mode" not in current.entry


def test_a_validations_csv_reads_back_as_its_summaries(tmp_path):
    from sb3_ppo_variants.zoo.validation import read_outputs, write_outputs

    study = _validation_study({CURRENT: [100.0, 120.0, 110.0], "trial-3": [150.0, 170.0, 160.0], SB3_PPO: [90.0, 95.0, 140.0]})
    summaries, seeds = summarize(study)
    summaries[1] = dataclasses.replace(summaries[1], candidate=dataclasses.replace(summaries[1].candidate, tuning_value=321.5))
    write_outputs(str(tmp_path), summaries, seeds, "CartPole-v1", eval_episodes=5)
    env_id, read, read_seeds = read_outputs(tmp_path / "validation.csv")
    assert (env_id, read_seeds) == ("CartPole-v1", seeds)
    assert [summary.candidate for summary in read] == [
        dataclasses.replace(summary.candidate, entry={"n_timesteps": 1000}) for summary in summaries
    ]
    for got, written in zip(read, summaries, strict=True):
        assert (got.returns, got.mean, got.half_width) == (written.returns, written.mean, written.half_width)
        assert (got.p_current, got.p_sb3) == (written.p_current, written.p_sb3)

    # A run not done yet is an empty cell: NaN, and out of the statistics
    lines = (tmp_path / "validation.csv").read_text().splitlines()
    assert lines[1] == "CartPole-v1,current,ppo_penalty,1000,,1000,100.0"
    (tmp_path / "validation.csv").write_text("\n".join([lines[0], lines[1].rsplit(",", 1)[0] + ",", *lines[2:]]) + "\n")
    _, read, _ = read_outputs(tmp_path / "validation.csv")
    assert np.isnan(read[0].returns[0]) and read[0].mean == 115.0

    # A file of another format is refused with what it lacks
    (tmp_path / "validation.csv").write_text("candidate,algo,seed,final_return\ncurrent,ppo_penalty,1000,1.0\n")
    with pytest.raises(ValueError, match=r"lacks the columns \['env_id', 'steps', 'tuning_value'\]"):
        read_outputs(tmp_path / "validation.csv")


def test_welchs_test_against_a_constant_side_is_quiet_and_exact():
    from sb3_ppo_variants.zoo.validation import _welch

    constant, varying = np.full(10, 500.0), np.array([500.0] * 9 + [444.1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p_value = _welch(constant, varying)
    # Welch's t with the constant side's variance 0: t = mean difference / (s / sqrt(n)), n - 1 degrees of freedom
    t = (500.0 - varying.mean()) / (varying.std(ddof=1) / np.sqrt(10))
    assert p_value == pytest.approx(2 * stats.t.sf(t, 9))
