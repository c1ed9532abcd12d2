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
- ``--trial-seeds K``: each trial trains K seeds (in lockstep, see :mod:`sb3_ppo_variants.zoo.seeds`), its value
  the mean of their evaluations (the per-seed values on the trial); the pruner judges the running mean.
- Each worker samples with a seed of its own (printed; ``--sampler-seed`` pins it): rl_zoo3 seeds the sampler with
  ``--seed``, so two workers given one seed, or a worker restarted with its seed, sample the same trials again.
- A sampled rollout (``n_steps`` x envs) larger than the trial's budget is pruned at once, with its reason; a study
  whose budget never leaves the sampler's random start-up phase warns.
- The report: a CSV of trials (with the reason of each pruned or failed one), the optimization history and parameter
  importances as PNG (matplotlib), the best trial's model and its zoo YAML entry.
"""

import copy
import os
import secrets
import shutil
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import rl_zoo3
import torch as th
import yaml

# Private to Optuna (no public way to beat before the trial's first heartbeat, see _budgeted_objective): the `zoo`
# extra bounds optuna to the tested minor versions
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState
from rl_zoo3.exp_manager import ExperimentManager
from rl_zoo3.hyperparams_opt import HYPERPARAMS_CONVERTER, HYPERPARAMS_SAMPLER
from rl_zoo3.utils import ALGOS, get_callback_list
from stable_baselines3.common.callbacks import EvalCallback

from sb3_ppo_variants.common.finite import NonFiniteError
from sb3_ppo_variants.zoo.registration import ZOO_ALGOS, policy_kwargs_dict, zoo_config_path
from sb3_ppo_variants.zoo.report import write_report
from sb3_ppo_variants.zoo.seeds import NON_FINITE, PRUNABLE, LockstepSeeds, SeedFailedError, parallel_seeds
from sb3_ppo_variants.zoo.storage import DEFAULT_HEARTBEAT_INTERVAL, make_storage, shown_url

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


def _checked_sampler(
    sampler: Callable[..., dict[str, Any]], yaml_policy_kwargs: Any, n_envs: int, n_timesteps: int
) -> Callable[..., dict[str, Any]]:
    """
    :return: ``sampler`` whose samples keep the YAML ``policy_kwargs`` that they do not set, and which prunes at once
        (with its reason) a trial whose rollout is larger than its budget: it would train on one rollout, or none
    """

    def sample(trial: optuna.Trial, *args: Any) -> dict[str, Any]:
        hyperparameters = _with_yaml_policy_kwargs(sampler(trial, *args), yaml_policy_kwargs)
        rollout = int(hyperparameters.get("n_steps", 0)) * n_envs
        if rollout > n_timesteps:
            reason = (
                f"rollout too large: n_steps {hyperparameters['n_steps']} x {n_envs} envs = {rollout} steps, more "
                f"than the trial's budget of {n_timesteps} steps"
            )
            trial.set_user_attr("pruned_reason", reason)
            raise optuna.TrialPruned(reason)
        return hyperparameters

    return sample


class TuningExperimentManager(ExperimentManager):
    """
    rl_zoo3's ``ExperimentManager`` (same arguments) with exact global budgets, heartbeats, reasons for failed
    and pruned trials, and a richer report; see the module docstring. It overrides and reads rl_zoo3's internals
    (``read_hyperparameters``, ``hyperparameters_optimization``, ``objective``, ``_hyperparams``,
    ``_create_sampler``): rl_zoo3 is bounded to its tested minor version in the ``zoo`` extra.

    :param heartbeat_interval: Seconds between trial heartbeats (SQLite and PostgreSQL storages)
    :param trial_seeds: Seeds that each trial trains (1: rl_zoo3's own objective, one unseeded run)
    :param sampler_seed: The sampler's seed (None: a new one, printed)
    :param fixed_params: Parameters of the search space held at these values (``--fixed``), the others searched
    """

    def __init__(
        self,
        *args: Any,
        heartbeat_interval: int = DEFAULT_HEARTBEAT_INTERVAL,
        trial_seeds: int = 1,
        sampler_seed: int | None = None,
        fixed_params: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if trial_seeds < 1:
            raise ValueError(f"trial_seeds must be an integer >= 1, got {trial_seeds}")
        self.heartbeat_interval = heartbeat_interval
        self.trial_seeds = trial_seeds
        self.fixed_params = dict(fixed_params or {})
        self.sampler_seed = secrets.randbelow(2**32) if sampler_seed is None else sampler_seed
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
        study = optuna.load_study(storage=self._storage(storage), study_name=study_name)
        trial = study.best_trial if trial_id is None else study.trials[trial_id]
        if trial_id is not None and trial.state != TrialState.COMPLETE:
            print(f"Warning: trial {trial_id} of study {study_name} is {trial.state.name}, not COMPLETE")
        if convert:
            return HYPERPARAMS_CONVERTER[self.algo](trial.params)
        return trial.params

    def _storage(self, url: str) -> optuna.storages.BaseStorage:
        return make_storage(url, self.heartbeat_interval, n_jobs=self.n_jobs)

    def _create_sampler(self, sampler_method: str) -> optuna.samplers.BaseSampler:
        # rl_zoo3 seeds the sampler with --seed, the training's seed
        training_seed, self.seed = self.seed, self.sampler_seed
        try:
            sampler = super()._create_sampler(sampler_method)
        finally:
            self.seed = training_seed
        if not self.fixed_params:
            return sampler
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # there since Optuna 2.4
            return optuna.samplers.PartialFixedSampler(self.fixed_params, sampler)

    def objective(self, trial: optuna.Trial) -> float:
        if self.trial_seeds == 1:
            return super().objective(trial)
        return self._multi_seed_objective(trial)

    def _trial_seeds(self) -> list[int]:
        """:return: The seeds of every trial: the same for all, so that trials differ by their hyperparameters only"""
        return [(self.seed + index) % 2**32 for index in range(self.trial_seeds)]

    def _train_seed(self, hyperparameters: dict[str, Any], seed: int, callback: EvalCallback) -> None:
        """Train one seed of a trial (in its own process, see :mod:`sb3_ppo_variants.zoo.seeds`)."""
        self.seed = seed  # create_envs seeds the envs with it
        env = self.create_envs(self.n_envs, no_log=True)
        model = ALGOS[self.algo](
            env=env,
            tensorboard_log=None,
            seed=seed,
            verbose=self.verbose if self.verbose >= 2 else 0,
            device=self.device,
            **hyperparameters,
        )
        try:
            model.learn(self.n_timesteps, callback=[*get_callback_list({"callback": self.specified_callbacks}), callback])
        finally:
            env.close()
            assert callback.eval_env is not None
            callback.eval_env.close()

    def _seed_callback_kwargs(self, trial_folder: str | None, seed: int) -> dict[str, Any]:
        """:return: The arguments of a seed's evaluation callback (as rl_zoo3's trial callback has them)"""
        self.seed = seed
        folder = None if trial_folder is None else os.path.join(trial_folder, f"seed_{seed}")
        return {
            "eval_env": self.create_envs(n_envs=self.n_eval_envs, eval_env=True),
            "n_eval_episodes": self.n_eval_episodes,
            "eval_freq": max(int(self.n_timesteps / self.n_evaluations) // self.n_envs, 1),
            "deterministic": self.deterministic_eval,
            "verbose": 0,
            "best_model_save_path": folder,
            "log_path": folder,
        }

    def _multi_seed_objective(self, trial: optuna.Trial) -> float:
        """
        rl_zoo3's objective with ``trial_seeds`` seeds: the trial's value and every report is the mean of the seeds'
        evaluations; the per-seed values are the trial's user attributes ``seeds`` and ``seed_values``.
        """
        hyperparameters = self._hyperparams.copy()
        hyperparameters.update(HYPERPARAMS_SAMPLER[self.algo](trial, self.n_actions, self.n_envs, {}))
        seeds = self._trial_seeds()
        trial.set_user_attr("seeds", seeds)
        trial_folder = None
        if self.optimization_log_path is not None:
            trial_folder = os.path.join(self.optimization_log_path, f"trial_{trial.number}")
        parallel = parallel_seeds(len(seeds), self.n_jobs)
        runs = LockstepSeeds(
            lambda seed, callback: self._train_seed(hyperparameters, seed, callback),
            seeds,
            lambda seed: self._seed_callback_kwargs(trial_folder, seed),
            parallel=parallel,
            # The torch threads of the worker (--num-threads, else the cores), shared by the seeds that train at once
            threads=max(1, th.get_num_threads() // (parallel * max(self.n_jobs, 1))),
        )
        values: list[float] = []
        try:
            for step, values in enumerate(runs.evaluations(), start=1):
                trial.set_user_attr("seed_values", values)
                trial.report(float(np.mean(values)), step)
                go_on = not trial.should_prune()
                runs.answer(go_on)
                if not go_on:
                    raise optuna.TrialPruned(f"mean of the seeds' evaluations at evaluation {step}")
        except SeedFailedError as error:
            if error.kind == NON_FINITE:
                raise NonFiniteError(str(error)) from error
            if error.kind == PRUNABLE:
                raise optuna.TrialPruned(str(error)) from error
            raise
        finally:
            runs.stop()
            if trial_folder is not None and values:
                # Pruned trials too, as rl_zoo3's trial callback leaves the best model of every trial
                self._keep_best_seeds_model(trial_folder, seeds, values)
        if not values:
            raise optuna.TrialPruned(f"no evaluation ran within the budget of {self.n_timesteps} steps")
        return float(np.mean(values))

    @staticmethod
    def _keep_best_seeds_model(trial_folder: str, seeds: list[int], values: list[float]) -> None:
        """The trial's ``best_model.zip`` (the one the report looks for): that of its seed with the best last evaluation."""
        best_seed = seeds[int(np.argmax(values))]
        model = os.path.join(trial_folder, f"seed_{best_seed}", "best_model.zip")
        if os.path.exists(model):
            shutil.copyfile(model, os.path.join(trial_folder, "best_model.zip"))

    def _warn_if_never_past_startup(self, study: optuna.Study) -> None:
        """Warn when the study's budget of trials ends within TPE's random start-up trials."""
        if self.sampler != "tpe":
            return
        budget = self.max_total_trials if self.max_total_trials is not None else len(study.trials) + self.n_trials
        if budget <= self.n_startup_trials:
            pruner = " (and the median pruner prunes none of them)" if self.pruner == "median" else ""
            warnings.warn(
                f"The study's budget of {budget} trials ends within the TPE sampler's {self.n_startup_trials} random "
                f"start-up trials{pruner}: every trial is sampled at random. Give more trials (--n-trials, "
                "--max-total-trials) or fewer start-up trials (--n-startup-trials).",
                UserWarning,
                stacklevel=2,
            )

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
            except KeyboardInterrupt:
                trial.set_user_attr("fail_reason", "interrupted (Ctrl-C)")
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
            storage=self._storage(self.storage),
            study_name=self.study_name,
            load_if_exists=True,
            direction="maximize",
        )
        print(f"Sampler seed: {self.sampler_seed} (--sampler-seed {self.sampler_seed} samples as this worker does)")
        if self.trial_seeds > 1:
            print(
                f"Each trial trains seeds {self._trial_seeds()}, {parallel_seeds(self.trial_seeds, self.n_jobs)} at a time;"
                " its value is the mean of their evaluations"
            )
        self._warn_if_never_past_startup(study)
        if "command" not in study.user_attrs:
            study.set_user_attr("command", " ".join(sys.orig_argv))
            for key in sorted(self._hyperparams):
                study.set_user_attr(key, str(self._hyperparams[key]))
        print(f"Study '{self.study_name}' in {shown_url(self.storage)} (sampler: {self.sampler}, pruner: {self.pruner})")

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
        HYPERPARAMS_SAMPLER[self.algo] = _checked_sampler(
            original_sampler, self._hyperparams.get("policy_kwargs"), self.n_envs, self.n_timesteps
        )
        try:
            with warnings.catch_warnings():
                # The command said so once, before the study (see search_spaces.fixed_parameters); Optuna, every trial
                warnings.filterwarnings("ignore", message="Fixed parameter .* is out of range", category=UserWarning)
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
