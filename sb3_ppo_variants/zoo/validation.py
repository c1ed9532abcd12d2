"""
``sb3-ppo-variants validate``: re-train a study's best trials, the current YAML entry and SB3 PPO's zoo entry on
fresh seeds at the entry's full budget, and say which entry the evidence supports.

A tuning study ranks its trials by short, few-seed runs: its winner is often a lucky one. Validation trains every
candidate on the same M fresh seeds (default 10, from ``--first-seed`` 1000 on: none that a study trained), for the
YAML entry's ``n_timesteps``, and evaluates each run's final model on ``--eval-episodes`` deterministic episodes.

The runs are the trials of a validation study in the tuning study's storage (``<study>-validation``): the first
worker defines the candidates and seeds (stored on the study) and queues one trial per run; every worker, on this
machine (``--workers``) or on any other that reaches the storage, takes queued runs until every run has ended. A
worker that dies leaves its run to be retried (the storage's heartbeat, as in tuning): the workers still waiting
queue it again once its heartbeat is two intervals old (or, for a worker killed before its run's first heartbeat, two
intervals after they first saw the run, plus SQLite's lock timeout: see ``storage.fail_dead_trials``).

The report: per candidate, the mean final return with its 95% interval (Student's t), and Welch's t-test against the
current entry and against SB3 PPO's entry (the same seeds for all; unequal variances, unpaired). The proposal is the best tuned
candidate if its mean beats the current entry's; otherwise the current entry stays. A candidate worse than the
current entry is never proposed, and one that beats it within noise is proposed with that said.
"""

import json
import math
import multiprocessing
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState
from scipy import stats

from sb3_ppo_variants.zoo.registration import constructor_arguments, policy_kwargs_dict, zoo_hyperparameters
from sb3_ppo_variants.zoo.report import tuned_zoo_entry, without_run_options
from sb3_ppo_variants.zoo.runs import algorithm_class, final_returns, seeded_envs
from sb3_ppo_variants.zoo.storage import fail_dead_trials, make_storage

CURRENT, SB3_PPO = "current", "sb3-ppo"
# Keys of a zoo entry that a validation run can honour; entries with others (env wrappers, frame stacking,
# callbacks) are refused rather than trained differently from the zoo
SUPPORTED_KEYS = {"policy", "n_envs", "n_timesteps", "normalize", "env_kwargs"}


@dataclass(frozen=True)
class Candidate:
    """
    An entry to validate.

    :param name: ``current``, ``sb3-ppo`` or ``trial-<n>``
    :param algo: ``ppo_clip``, ``ppo_penalty`` or ``ppo`` (SB3's)
    :param entry: The zoo YAML entry
    :param tuning_value: The trial's value in the tuning study (None for the others)
    """

    name: str
    algo: str
    entry: dict[str, Any]
    tuning_value: float | None = None


def _sb3_ppo_entry(env_id: str) -> dict[str, Any]:
    import rl_zoo3

    with open(Path(rl_zoo3.__file__).parent / "hyperparams" / "ppo.yml") as file:
        entries = yaml.safe_load(file)
    if env_id not in entries:
        raise ValueError(f"rl_zoo3's ppo.yml has no entry for {env_id}: no SB3 PPO to compare with (use --no-sb3)")
    return dict(entries[env_id])


def _chosen_trials(study: optuna.Study, top: int, numbers: Sequence[int] | None) -> list[FrozenTrial]:
    """
    :param study: The tuning study
    :param top: How many of its best complete trials to take
    :param numbers: The numbers of the complete trials to take instead (each once), or None
    :return: The trials, best first, of equal values the earlier trial first (or in the order of ``numbers``)
    """
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if numbers is None:
        return sorted(complete, key=lambda trial: (-trial.value, trial.number))[:top]  # type: ignore[operator]
    if len(set(numbers)) != len(numbers):
        raise ValueError(f"--trials must name each trial once, got {list(numbers)}")
    by_number = {trial.number: trial for trial in complete}
    missing = [number for number in numbers if number not in by_number]
    if missing:
        raise ValueError(
            f"--trials must name complete trials of study {study.study_name} ({len(by_number)} complete, best: "
            f"{[trial.number for trial in _chosen_trials(study, 5, None)]}), got {missing}"
        )
    return [by_number[number] for number in numbers]


def candidates(
    algo: str,
    env_id: str,
    study: optuna.Study | None,
    top: int,
    with_sb3: bool = True,
    trial_numbers: Sequence[int] | None = None,
) -> list[Candidate]:
    """
    :param algo: ``ppo_clip`` or ``ppo_penalty``
    :param env_id: The environment's id
    :param study: The tuning study, or None (the current entry alone, and SB3 PPO's)
    :param top: How many of its best complete trials to validate
    :param with_sb3: Whether SB3 PPO's zoo entry is a candidate too
    :param trial_numbers: The numbers of the complete trials to validate instead of the ``top`` best ones (None:
        the ``top`` best)
    :return: The current entry, the chosen trials' entries (the current entry with their values on top), SB3 PPO's
    """
    from rl_zoo3.hyperparams_opt import HYPERPARAMS_CONVERTER

    from sb3_ppo_variants.zoo.registration import register_algorithms

    register_algorithms()
    current = without_run_options(zoo_hyperparameters(algo, env_id))
    found = [Candidate(CURRENT, algo, current)]
    if study is not None:
        for trial in _chosen_trials(study, top, trial_numbers):
            entry = tuned_zoo_entry(current, HYPERPARAMS_CONVERTER[algo](trial.params))
            found.append(Candidate(f"trial-{trial.number}", algo, entry, trial.value))
    if with_sb3:
        found.append(Candidate(SB3_PPO, "ppo", _sb3_ppo_entry(env_id)))
    for candidate in found:
        unsupported = set(candidate.entry) - SUPPORTED_KEYS - _algorithm_keys(candidate.algo)
        if unsupported:
            raise ValueError(f"{candidate.name}'s entry has {sorted(unsupported)}, which validation does not support")
    return found


def in_fast_mode(found: list[Candidate]) -> list[Candidate]:
    """
    :param found: Candidates
    :return: The same, this package's candidates trained with ``fast_mode=True`` (compiled); SB3 PPO's as SB3 trains it
    """
    return [
        candidate if candidate.algo == "ppo" else replace(candidate, entry={**candidate.entry, "fast_mode": True})
        for candidate in found
    ]


def _algorithm_keys(algo: str) -> set[str]:
    import inspect

    return set(inspect.signature(algorithm_class(algo)).parameters) - {"self", "env", "policy"}


def _normalize_kwargs(normalize: Any) -> dict[str, Any] | None:
    """:return: ``VecNormalize``'s keywords for a zoo ``normalize`` value (True, or a ``dict(...)`` string), or None"""
    if not normalize:
        return None
    return {} if normalize is True else policy_kwargs_dict(normalize)


def train_and_evaluate(candidate: Candidate, env_id: str, seed: int, eval_episodes: int) -> float:
    """
    Train the candidate's entry with one seed for its full budget, and evaluate the final model.

    :param candidate: The candidate
    :param env_id: The environment's id
    :param seed: The seed of the training (its evaluation env is seeded with ``seed + 10_000``)
    :param eval_episodes: Deterministic evaluation episodes
    :return: The mean return of those episodes
    """
    entry = dict(candidate.entry)
    env_kwargs = entry.pop("env_kwargs", None)
    keywords, n_envs, _ = constructor_arguments(entry)
    normalize = _normalize_kwargs(entry.get("normalize"))
    with seeded_envs(env_id, n_envs, seed, normalize, keywords.get("gamma", 0.99), env_kwargs) as (env, eval_env):
        model = algorithm_class(candidate.algo)(entry.get("policy", "MlpPolicy"), env, seed=seed, device="cpu", **keywords)
        model.learn(int(entry["n_timesteps"]))
        return float(np.mean(final_returns(model, env, eval_env, eval_episodes)))


# The validation study: candidates and seeds on the study, one queued trial per (candidate, seed)
RUN = "run"
# How often a worker with no run left looks whether the others' runs have ended (or died, to be queued again)
WAIT_S = 5.0


def _run_number(candidate_index: int, seed_index: int, n_seeds: int) -> int:
    """:return: The number of a run (its trial's ``RUN`` parameter), whatever the order in which runs are queued"""
    return candidate_index * n_seeds + seed_index


def _candidate_and_seed_indices(run: int, n_seeds: int) -> tuple[int, int]:
    """:return: The indices of the run's candidate and seed (the inverse of :func:`_run_number`)"""
    return divmod(run, n_seeds)


def _definition(study: optuna.Study) -> tuple[list[Candidate], list[int], str, int]:
    attrs = study.user_attrs
    found = [Candidate(**candidate) for candidate in json.loads(attrs["candidates"])]
    return found, list(attrs["seeds"]), attrs["env_id"], int(attrs["eval_episodes"])


class ValidationMismatchError(ValueError):
    """The validation study exists with another definition (candidates, seeds, budget) than the one asked for."""


def open_validation(
    storage: optuna.storages.BaseStorage,
    study_name: str,
    env_id: str,
    found: list[Candidate],
    seeds: list[int],
    eval_episodes: int,
    wait_s: float = 120.0,
) -> optuna.Study:
    """
    Open the validation study; the worker that creates it (exactly one: study names are unique in a storage)
    defines the candidates and seeds and queues the runs, the others wait for that definition and check that it is
    theirs.

    :param storage: The storage
    :param study_name: The validation study's name
    :param env_id: The environment's id
    :param found: The candidates
    :param seeds: The seeds
    :param eval_episodes: Evaluation episodes per run
    :param wait_s: How long another worker waits for the definition
    :return: The study
    :raises ValidationMismatchError: If the study exists with another definition
    """
    definition = json.dumps([asdict(candidate) for candidate in found])
    try:
        study = optuna.create_study(storage=storage, study_name=study_name, direction="maximize")
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(storage=storage, study_name=study_name)
        deadline = time.monotonic() + wait_s
        while "candidates" not in study.user_attrs:
            if time.monotonic() > deadline:
                raise RuntimeError(f"validation study {study_name} has no candidates after {wait_s:.0f} s") from None
            time.sleep(1.0)
            study = optuna.load_study(storage=storage, study_name=study_name)
        asked = (definition, seeds, env_id, eval_episodes)
        if asked != tuple(study.user_attrs[key] for key in ("candidates", "seeds", "env_id", "eval_episodes")):
            raise ValidationMismatchError(
                f"the validation study {study_name} exists with other candidates, seeds, budget or episodes than these "
                "(its results are kept): give --validation-name for a new one, or the same arguments as its first run"
            ) from None
        return study
    study.set_user_attr("seeds", seeds)
    study.set_user_attr("env_id", env_id)
    study.set_user_attr("eval_episodes", eval_episodes)
    # Seed by seed, each candidate in turn: a validation read part way (or stopped) compares all on the same seeds
    for seed_index in range(len(seeds)):
        for candidate_index in range(len(found)):
            study.enqueue_trial({RUN: _run_number(candidate_index, seed_index, len(seeds))})
    # Last: its presence tells the other workers that the runs are queued
    study.set_user_attr("candidates", definition)
    return study


class NoRunLeftError(RuntimeError):
    """A worker asked for a run when every run had been taken."""


class RunFailedError(RuntimeError):
    """A validation run raised (its trial fails with the reason; the worker goes on)."""


def _is_queued(study: optuna.Study, trial: optuna.Trial) -> bool:
    """
    :return: Whether the trial is a queued run (its run fixed by ``enqueue_trial``, or set when Optuna retried it),
        not one that Optuna created because the queue had emptied meanwhile. Read through Optuna's private storage
        and trial id (Trial has no public system attributes; optuna is bounded in the ``zoo`` extra).
    """
    frozen = study._storage.get_trial(trial._trial_id)
    return RUN in frozen.params or RUN in frozen.system_attrs.get("fixed_params", {})


def _objective(study: optuna.Study) -> Any:
    found, seeds, env_id, eval_episodes = _definition(study)
    n_runs = len(found) * len(seeds)

    def objective(trial: optuna.Trial) -> float:
        if not _is_queued(study, trial):
            trial.set_user_attr("fail_reason", "no validation run left (another worker took the last)")
            study.stop()
            raise NoRunLeftError("no validation run left")
        index = trial.suggest_int(RUN, 0, n_runs - 1)
        candidate_index, seed_index = _candidate_and_seed_indices(index, len(seeds))
        candidate, seed = found[candidate_index], seeds[seed_index]
        trial.set_user_attr("candidate", candidate.name)
        trial.set_user_attr("seed", seed)
        try:
            return train_and_evaluate(candidate, env_id, seed, eval_episodes)
        except Exception as error:
            # The run is missing from the table (its row says why in the study); the other runs go on
            trial.set_user_attr("fail_reason", f"{type(error).__name__}: {error}")
            raise RunFailedError(str(error)) from error

    return objective


def _count(study: optuna.Study, state: TrialState) -> int:
    return len(study.get_trials(deepcopy=False, states=(state,)))


def work(storage_url: str, study_name: str, heartbeat_interval: int) -> None:
    """
    A worker: run queued validation runs until every run has ended. While other workers' runs are running it waits
    (checking their heartbeats): a run whose worker died is queued again and taken.

    :param storage_url: The storage
    :param study_name: The validation study
    :param heartbeat_interval: Seconds between a running run's heartbeats
    """
    import torch as th

    th.set_num_threads(1)
    study = optuna.load_study(study_name=study_name, storage=make_storage(storage_url, heartbeat_interval))
    objective, first_seen_without_heartbeat = _objective(study), dict[int, float]()
    while True:
        fail_dead_trials(study, first_seen_without_heartbeat)
        if _count(study, TrialState.WAITING) > 0:
            study.optimize(objective, n_trials=1, catch=(NoRunLeftError, RunFailedError))
        elif _count(study, TrialState.RUNNING) > 0:
            time.sleep(min(heartbeat_interval, WAIT_S))
        else:
            return


def run_workers(storage_url: str, study_name: str, heartbeat_interval: int, workers: int) -> None:
    """Run ``workers`` worker processes (spawned: each opens its own connections) until the queue is empty."""
    if workers == 1:
        work(storage_url, study_name, heartbeat_interval)
        return
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=work, args=(storage_url, study_name, heartbeat_interval)) for _ in range(workers)]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    failed = [process.exitcode for process in processes if process.exitcode != 0]
    if failed:
        raise RuntimeError(f"{len(failed)} of {workers} validation workers failed (exit codes {failed})")


@dataclass(frozen=True)
class Summary:
    """
    One candidate's validation.

    :param candidate: The candidate
    :param returns: Its final returns, by seed (NaN where a run is not done)
    :param mean: Their mean
    :param half_width: The half-width of the 95% interval of the mean (Student's t)
    :param p_current: Welch's two-sided p-value against the current entry (None for itself)
    :param p_sb3: Welch's two-sided p-value against SB3 PPO's entry (None for itself, or without it)
    """

    candidate: Candidate
    returns: list[float]
    mean: float
    half_width: float
    p_current: float | None
    p_sb3: float | None

    @property
    def runs_done(self) -> int:
        """:return: How many of its runs are done"""
        return sum(not math.isnan(value) for value in self.returns)


def _half_width(values: np.ndarray) -> float:
    if len(values) < 2:
        return math.inf
    return float(stats.t.ppf(0.975, len(values) - 1) * np.std(values, ddof=1) / math.sqrt(len(values)))


def _welch(values: np.ndarray, other: np.ndarray) -> float:
    if len(values) < 2 or len(other) < 2:
        return math.nan
    if np.std(values) == 0 and np.std(other) == 0:
        return 1.0 if np.mean(values) == np.mean(other) else 0.0
    with warnings.catch_warnings():
        # scipy warns of precision loss when one side is constant (e.g. every run at an env's maximum return):
        # Welch's variance is then the other side's alone, which is exact
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(stats.ttest_ind(values, other, equal_var=False).pvalue)


def summarize(study: optuna.Study) -> tuple[list[Summary], list[int]]:
    """:return: Each candidate's summary (in the study's order), and the seeds"""
    found, seeds, _, _ = _definition(study)
    returns = {candidate.name: [math.nan] * len(seeds) for candidate in found}
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        candidate_index, seed_index = _candidate_and_seed_indices(int(trial.params[RUN]), len(seeds))
        returns[found[candidate_index].name][seed_index] = float(trial.value)  # type: ignore[arg-type]
    return _summaries(found, returns), seeds


def _summaries(found: list[Candidate], returns: dict[str, list[float]]) -> list[Summary]:
    """:return: The summaries of the candidates' returns by seed (NaN: not done)"""
    done = {name: np.array([value for value in values if not math.isnan(value)]) for name, values in returns.items()}
    summaries = []
    for candidate in found:
        values = done[candidate.name]
        p_current = None if candidate.name == CURRENT else _welch(values, done[CURRENT])
        p_sb3 = None if candidate.name == SB3_PPO or SB3_PPO not in done else _welch(values, done[SB3_PPO])
        mean = float(np.mean(values)) if len(values) else math.nan
        summaries.append(Summary(candidate, returns[candidate.name], mean, _half_width(values), p_current, p_sb3))
    return summaries


# One row per run of validation.csv
CSV_COLUMNS = ("env_id", "candidate", "algo", "steps", "tuning_value", "seed", "final_return")


def read_outputs(csv_path: str | Path) -> tuple[str, list[Summary], list[int]]:
    """
    :param csv_path: A ``validation.csv`` that :func:`write_outputs` wrote
    :return: Its env id, the candidates' summaries (entries reduced to their budget and tuning value) and the seeds
    """
    import pandas as pd

    table = pd.read_csv(csv_path)
    missing = [column for column in CSV_COLUMNS if column not in table.columns]
    if missing:
        raise ValueError(f"{csv_path} lacks the columns {missing} (written by an older validate: run it again to rewrite it)")
    seeds = sorted(int(seed) for seed in table["seed"].unique())
    found: list[Candidate] = []
    returns: dict[str, list[float]] = {}
    for name, rows in table.groupby("candidate", sort=False):
        first = rows.iloc[0]
        tuning_value = None if pd.isna(first["tuning_value"]) else float(first["tuning_value"])
        found.append(Candidate(str(name), str(first["algo"]), {"n_timesteps": int(first["steps"])}, tuning_value))
        by_seed = dict(zip(rows["seed"].astype(int), rows["final_return"].astype(float), strict=True))
        returns[str(name)] = [by_seed.get(seed, math.nan) for seed in seeds]
    return str(table["env_id"].iloc[0]), _summaries(found, returns), seeds


def proposal(summaries: list[Summary]) -> Summary:
    """
    :return: The entry the evidence supports: the best tuned trial if its mean beats the current entry's, else the
        current entry (SB3 PPO's entry is a yardstick, never proposed)
    """
    current = next(summary for summary in summaries if summary.candidate.name == CURRENT)
    tuned = [
        summary for summary in summaries if summary.candidate.name not in (CURRENT, SB3_PPO) and not math.isnan(summary.mean)
    ]
    best = max(tuned, key=lambda summary: summary.mean, default=None)
    # Without a run of the current entry done, nothing can be said to beat it
    return best if best is not None and best.mean > current.mean else current


def format_p(value: float | None) -> str:
    """:return: A p-value as the tables show it (empty for None, ``n/a`` for NaN)"""
    return "" if value is None else "n/a" if math.isnan(value) else f"{value:.3f}"


def report(summaries: list[Summary], seeds: list[int], env_id: str, eval_episodes: int) -> str:
    """:return: The validation as Markdown: the table, then the proposed YAML entry with its evidence"""
    lines = [
        f"### Validation: {env_id}, {len(seeds)} seeds ({seeds[0]}-{seeds[-1]}), each candidate at its entry's budget, "
        f"{eval_episodes} deterministic evaluation episodes per run",
        "",
        "| candidate | algorithm | steps | runs | mean final return ± 95% interval | tuning value | Welch p vs current | "
        "Welch p vs SB3 PPO |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for summary in summaries:
        tuning = "" if summary.candidate.tuning_value is None else f"{summary.candidate.tuning_value:.1f}"
        steps = int(summary.candidate.entry["n_timesteps"])
        algorithm = summary.candidate.algo + (", fast mode" if summary.candidate.entry.get("fast_mode") else "")
        lines.append(
            f"| {summary.candidate.name} | {algorithm} | {steps:,} | {summary.runs_done}/{len(seeds)} | "
            f"{summary.mean:.1f} ± "
            f"{summary.half_width:.1f} | {tuning} | {format_p(summary.p_current)} | {format_p(summary.p_sb3)} |"
        )
    chosen = proposal(summaries)
    lines += ["", proposed_snippet(chosen, summaries, seeds, env_id)]
    return "\n".join(lines)


def proposed_snippet(chosen: Summary, summaries: list[Summary], seeds: list[int], env_id: str) -> str:
    """:return: The proposed zoo YAML entry, its evidence as comments"""
    current = next(summary for summary in summaries if summary.candidate.name == CURRENT)
    if chosen is current:
        verdict = f"keep the current entry: no tuned candidate's mean beats its {current.mean:.1f}"
        if math.isnan(current.mean):
            verdict = "keep the current entry: none of its runs is done yet"
    else:
        noise = "beyond noise" if chosen.p_current is not None and chosen.p_current < 0.05 else "within noise"
        verdict = (
            f"{chosen.candidate.name}: mean {chosen.mean:.1f} ± {chosen.half_width:.1f} against the current entry's "
            f"{current.mean:.1f} ± {current.half_width:.1f} ({noise}, Welch p = {format_p(chosen.p_current)})"
        )
    sb3 = next((summary for summary in summaries if summary.candidate.name == SB3_PPO), None)
    versus = ""
    if sb3 is not None:
        versus = f"; SB3 PPO's zoo entry: {sb3.mean:.1f} ± {sb3.half_width:.1f}, Welch p = {format_p(chosen.p_sb3)}"
    done, runs = sum(summary.runs_done for summary in summaries), len(summaries) * len(seeds)
    status = "Validated" if done == runs else f"Part way, {done} of {runs} runs done,"
    header = f"# {status} on seeds {seeds[0]}-{seeds[-1]}: {verdict}{versus}\n"
    return (
        "```yaml\n"
        + header
        + yaml.safe_dump({env_id: without_run_options(chosen.candidate.entry)}, sort_keys=False, width=1000)
        + "```"
    )


def write_outputs(folder: str, summaries: list[Summary], seeds: list[int], env_id: str, eval_episodes: int) -> str:
    """Write ``validation.md`` and ``validation.csv`` (one row per run) into ``folder``; :return: the Markdown"""
    os.makedirs(folder, exist_ok=True)
    markdown = report(summaries, seeds, env_id, eval_episodes)
    Path(folder, "validation.md").write_text(markdown + "\n")
    rows = [",".join(CSV_COLUMNS)]
    for summary in summaries:
        candidate = summary.candidate
        tuning = "" if candidate.tuning_value is None else candidate.tuning_value
        for seed, value in zip(seeds, summary.returns, strict=True):
            final = "" if math.isnan(value) else value
            rows.append(
                f"{env_id},{candidate.name},{candidate.algo},{int(candidate.entry['n_timesteps'])},{tuning},{seed},{final}"
            )
    Path(folder, "validation.csv").write_text("\n".join(rows) + "\n")
    return markdown
