"""
rl_zoo3's ``ExperimentManager`` with what distributed, fault-tolerant tuning needs and the zoo lacks.

Everything else (env creation, the trial objective, pruning by periodic evaluation, training) is the zoo's own.
Changes, each for a known zoo pitfall or gap:

- An env without an entry in this package's YAML file for the algorithm trains with rl_zoo3's PPO entry (for
  PPOPenalty without its clipping, with a warning that it is untuned).
- ``--trial-id 0`` loads trial 0 (the zoo tests ``if trial_id:`` and silently ignores it).
- Sampled ``policy_kwargs`` are merged into the YAML ones (the zoo replaces them, dropping e.g. ``log_std_init``).
- Storages get a heartbeat (see :mod:`sb3_ppo_variants.zoo.storage`); the default storage is a local SQLite file.
- ``--max-total-trials`` is exact across workers: a trial started beyond the budget by a race between workers
  ends at once as FAIL (reason recorded) without training, so the study finishes exactly the budget.
- A trial whose training goes non-finite is pruned with its reason in the trial's user attributes; any trial
  that fails records why (``fail_reason``). The study goes on.
- The report: a CSV of trials, the optimization history and parameter importances as PNG (matplotlib), the best
  trial's model and its zoo YAML entry.
"""

import copy
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import rl_zoo3
import yaml

# Private to Optuna (no public way to beat before the trial's first heartbeat, see _budgeted_objective): the `zoo`
# extra bounds optuna to the tested minor versions
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState
from rl_zoo3.exp_manager import ExperimentManager
from rl_zoo3.hyperparams_opt import HYPERPARAMS_CONVERTER, HYPERPARAMS_SAMPLER

from sb3_ppo_variants.common.finite import NonFiniteError
from sb3_ppo_variants.zoo.registration import ZOO_ALGOS, policy_kwargs_dict, zoo_config_path
from sb3_ppo_variants.zoo.report import write_report
from sb3_ppo_variants.zoo.storage import DEFAULT_HEARTBEAT_INTERVAL, make_storage

# rl_zoo3's own PPO hyperparameters, for the envs that this package's files do not cover
ZOO_PPO_HYPERPARAMETERS = Path(rl_zoo3.__file__).parent / "hyperparams" / "ppo.yml"

# Trials that count towards --max-total-trials: finished ones, running ones and queued ones (the retries of dead
# workers' trials), so that workers do not overshoot
BUDGET_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)


class OverBudgetError(RuntimeError):
    """A trial was started after the study's global budget was already taken by other workers."""


def _with_yaml_policy_kwargs(hyperparameters: dict[str, Any], yaml_policy_kwargs: Any) -> dict[str, Any]:
    """
    :param hyperparameters: A trial's hyperparameters (sampled or loaded)
    :param yaml_policy_kwargs: The YAML entry's ``policy_kwargs`` (string or dict)
    :return: The hyperparameters with the YAML ``policy_kwargs`` under the trial's (rl_zoo3 would drop the YAML's)
    """
    if "policy_kwargs" in hyperparameters:
        hyperparameters["policy_kwargs"] = {**policy_kwargs_dict(yaml_policy_kwargs), **hyperparameters["policy_kwargs"]}
    return hyperparameters


def _merging_sampler(sampler: Callable[..., dict[str, Any]], yaml_policy_kwargs: Any) -> Callable[..., dict[str, Any]]:
    """:return: ``sampler`` whose samples keep the YAML ``policy_kwargs`` that they do not set"""

    def sample(*args: Any) -> dict[str, Any]:
        return _with_yaml_policy_kwargs(sampler(*args), yaml_policy_kwargs)

    return sample


class TuningExperimentManager(ExperimentManager):
    """
    rl_zoo3's ``ExperimentManager`` (same arguments) with exact global budgets, heartbeats, reasons for failed
    and pruned trials, and a richer report; see the module docstring. It overrides and reads rl_zoo3's internals
    (``read_hyperparameters``, ``hyperparameters_optimization``, ``objective``, ``_hyperparams``,
    ``_create_sampler``): rl_zoo3 is bounded to its tested minor version in the ``zoo`` extra.

    :param heartbeat_interval: Seconds between trial heartbeats (SQLite and PostgreSQL storages)
    """

    def __init__(self, *args: Any, heartbeat_interval: int = DEFAULT_HEARTBEAT_INTERVAL, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.heartbeat_interval = heartbeat_interval
        if self.optimize_hyperparameters:
            self.study_name = self.study_name or f"{self.algo}-{self.env_name.gym_id}"
            study_folder = os.path.join(self.log_folder, self.algo, self.study_name)
            if self.storage is None:
                os.makedirs(study_folder, exist_ok=True)
                self.storage = f"sqlite:///{os.path.abspath(os.path.join(study_folder, 'study.db'))}"
            if self.optimization_log_path is None:
                self.optimization_log_path = os.path.join(study_folder, "trials")
        self.yaml_hyperparameters: dict[str, Any] = {}

    def _read_zoo_ppo_file_if_no_entry(self) -> bool:
        """
        Every env of rl_zoo3's ``ppo.yml`` (and its ``default`` for others) trains with our algorithms: where this
        package's file for the algorithm has no entry for the env, read rl_zoo3's PPO file instead.

        :return: Whether rl_zoo3's PPO file is read instead of this package's
        """
        if self.algo not in ZOO_ALGOS or Path(self.config).resolve() != zoo_config_path(self.algo).resolve():
            return False  # another algorithm, or the user's own file
        with open(self.config) as file:
            if self.env_name.gym_id in yaml.safe_load(file):
                return False
        self.config = str(ZOO_PPO_HYPERPARAMETERS)
        return True

    def read_hyperparameters(self) -> tuple[dict[str, Any], dict[str, Any]]:
        zoo_ppo_entry = self._read_zoo_ppo_file_if_no_entry()
        trial_id, self.trial_id = self.trial_id, None
        try:
            hyperparams, saved_hyperparams = super().read_hyperparameters()
        finally:
            self.trial_id = trial_id
        if zoo_ppo_entry and self.algo == "ppo_penalty":
            warnings.warn(
                f"{self.env_name.gym_id} has no entry in {zoo_config_path(self.algo).name}: PPOPenalty trains with rl_zoo3's "
                f"PPO entry without its clipping, untuned for PPOPenalty (tune it: sb3-ppo-variants tune --env "
                f"{self.env_name.gym_id})",
                UserWarning,
            )
            if "clip_range" not in (self.custom_hyperparams or {}):
                hyperparams.pop("clip_range", None)
                saved_hyperparams.pop("clip_range", None)
        # Before the trial's values: the report writes the tuned entry on top of the YAML one
        self.yaml_hyperparameters = copy.deepcopy(dict(saved_hyperparams))
        if self.storage and self.study_name and trial_id is not None:
            print(f"Loading hyperparameters of trial {trial_id} from study {self.study_name}")
            trial_hyperparams = self.load_trial(self.storage, self.study_name, trial_id)
            hyperparams.update(_with_yaml_policy_kwargs(trial_hyperparams, hyperparams.get("policy_kwargs")))
            if self.custom_hyperparams is not None:
                hyperparams.update(self.custom_hyperparams)
            # A trial without clipping: rl_zoo3 cannot take clip_range=None, and no key means no clipping
            if hyperparams.get("clip_range", 0.0) is None:
                del hyperparams["clip_range"]
            saved_hyperparams = type(saved_hyperparams)((key, hyperparams[key]) for key in sorted(hyperparams))
        return hyperparams, saved_hyperparams

    def load_trial(self, storage: str, study_name: str, trial_id: int | None = None, convert: bool = True) -> dict[str, Any]:
        study = optuna.load_study(storage=make_storage(storage, self.heartbeat_interval), study_name=study_name)
        trial = study.best_trial if trial_id is None else study.trials[trial_id]
        if trial_id is not None and trial.state != TrialState.COMPLETE:
            print(f"Warning: trial {trial_id} of study {study_name} is {trial.state.name}, not COMPLETE")
        if convert:
            return HYPERPARAMS_CONVERTER[self.algo](trial.params)
        return trial.params

    def _budgeted_objective(self, study: optuna.Study) -> Callable[[optuna.Trial], float]:
        """
        :param study: The study
        :return: The zoo's objective, which first ends at once a trial beyond the global budget, and records why a
            trial was pruned or failed
        """

        def objective(trial: optuna.Trial) -> float:
            # Optuna's heartbeat thread records its first beat concurrently with the objective: a worker killed before
            # that beat would leave its trial RUNNING forever (a trial without a beat is never stale). Beat first,
            # through Optuna's private storage and trial id (optuna is bounded in the `zoo` extra).
            if isinstance(study._storage, BaseHeartbeat) and study._storage.get_heartbeat_interval() is not None:
                study._storage.record_heartbeat(trial._trial_id)
            if self.max_total_trials is not None:
                counted = sorted(t.number for t in study.get_trials(deepcopy=False, states=BUDGET_STATES))
                if counted.index(trial.number) >= self.max_total_trials:
                    study.stop()
                    reason = f"over budget: {self.max_total_trials} trials were already finished or running"
                    trial.set_user_attr("fail_reason", reason)
                    raise OverBudgetError(reason)
            try:
                return self.objective(trial)
            except optuna.TrialPruned as pruned:
                if pruned.__cause__ is not None:
                    trial.set_user_attr("pruned_reason", f"{type(pruned.__cause__).__name__}: {pruned.__cause__}")
                raise
            except NonFiniteError as error:
                trial.set_user_attr("pruned_reason", f"{type(error).__name__}: {error}")
                raise optuna.TrialPruned(str(error)) from error
            except Exception as error:
                trial.set_user_attr("fail_reason", f"{type(error).__name__}: {error}")
                raise

        return objective

    def hyperparameters_optimization(self) -> None:
        assert self.storage is not None and self.study_name is not None
        if self.tensorboard_log is not None:
            print("Tensorboard log is deactivated when running hyperparameter optimization")
            self.tensorboard_log = None

        study = optuna.create_study(
            sampler=self._create_sampler(self.sampler),
            pruner=self._create_pruner(self.pruner),
            storage=make_storage(self.storage, self.heartbeat_interval),
            study_name=self.study_name,
            load_if_exists=True,
            direction="maximize",
        )
        if "command" not in study.user_attrs:
            study.set_user_attr("command", " ".join(sys.orig_argv))
            for key in sorted(self._hyperparams):
                study.set_user_attr(key, str(self._hyperparams[key]))
        print(f"Study '{self.study_name}' in {self.storage} (sampler: {self.sampler}, pruner: {self.pruner})")

        # Trials of dead workers end as FAIL (and are retried) now, so that they do not hold budget
        # (a no-op for storages without heartbeat)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        # As in rl_zoo3, --max-total-trials (the study's budget) takes precedence over --n-trials (per worker)
        n_trials = self.n_trials
        callbacks = []
        if self.max_total_trials is not None:
            callbacks.append(MaxTrialsCallback(self.max_total_trials, states=BUDGET_STATES))
            # Queued trials (WAITING) are still to be run by some worker: they are part of what is left to do
            started = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING))
            n_trials = max(self.max_total_trials - len(started), 0)

        original_sampler = HYPERPARAMS_SAMPLER[self.algo]
        HYPERPARAMS_SAMPLER[self.algo] = _merging_sampler(original_sampler, self._hyperparams.get("policy_kwargs"))
        try:
            if n_trials > 0:
                study.optimize(
                    self._budgeted_objective(study),
                    n_trials=n_trials,
                    n_jobs=self.n_jobs,
                    callbacks=callbacks,
                    catch=(OverBudgetError,),
                    gc_after_trial=True,
                    show_progress_bar=self.show_progress,
                )
        except KeyboardInterrupt:
            print("Interrupted: the study keeps every finished trial")
        finally:
            HYPERPARAMS_SAMPLER[self.algo] = original_sampler

        report_folder = os.path.join(self.log_folder, self.algo, self.study_name, "report")
        write_report(
            study,
            report_folder=report_folder,
            env_id=self.env_name.gym_id,
            yaml_hyperparameters=self.yaml_hyperparameters,
            converter=HYPERPARAMS_CONVERTER[self.algo],
            trials_folder=self.optimization_log_path,
            plots=not self.no_optim_plots,
            n_timesteps=self.n_timesteps,
        )
