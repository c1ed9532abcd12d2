"""The results of a tuning study, as files a person would rather look at than a database."""

import datetime
import functools
import os
import shutil
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
import yaml
from optuna.trial import TrialState
from torch import nn

from sb3_ppo_variants.zoo.registration import policy_kwargs_dict

if TYPE_CHECKING:
    import pandas


def format_python(value: Any) -> str:
    """
    Write a hyperparameter value as the Python expression rl_zoo3 evaluates (``policy_kwargs`` strings).

    :param value: A number, string, list, dict or ``torch.nn`` module class
    :return: The expression, e.g. ``dict(activation_fn=nn.ReLU, net_arch=dict(pi=[64], vf=[64]))``
    """
    if isinstance(value, type) and issubclass(value, nn.Module):
        return f"nn.{value.__name__}"
    if isinstance(value, dict):
        return "dict(" + ", ".join(f"{key}={format_python(item)}" for key, item in value.items()) + ")"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_python(item) for item in value) + "]"
    return repr(value)


# Keywords that choose how a run trains, not what it learns: an entry proposed by tuning or validation leaves them out
# (``tune -params fast_mode:True`` trains the trials compiled; the tuned entry holds the hyperparameters only)
RUN_OPTIONS = ("fast_mode",)


def without_run_options(entry: dict[str, Any]) -> dict[str, Any]:
    """:return: The zoo entry without :data:`RUN_OPTIONS`"""
    return {key: value for key, value in entry.items() if key not in RUN_OPTIONS}


def tuned_zoo_entry(yaml_hyperparameters: dict[str, Any], tuned: dict[str, Any]) -> dict[str, Any]:
    """
    The YAML entry to use after tuning: the original entry with the tuned values on top.

    :param yaml_hyperparameters: The entry as read from the YAML file (schedules as ``lin_<x>`` strings)
    :param tuned: The best trial's converted hyperparameters
    :return: A zoo YAML entry (plain values, ``policy_kwargs`` as a string, no :data:`RUN_OPTIONS`)
    """
    entry = {key: value for key, value in without_run_options(yaml_hyperparameters).items() if key != "policy_kwargs"}
    policy_kwargs = policy_kwargs_dict(yaml_hyperparameters.get("policy_kwargs"))
    for key, value in tuned.items():
        if key == "policy_kwargs":
            policy_kwargs.update(value)
        else:
            entry[key] = value
    # rl_zoo3 cannot read `clip_range: null`: no clipping is the absence of the key (PPOPenalty's default)
    if entry.get("clip_range", 0.0) is None:
        del entry["clip_range"]
    if policy_kwargs:
        entry["policy_kwargs"] = format_python(policy_kwargs)
    return dict(sorted(entry.items()))


def searched_parameters(study: optuna.Study) -> list[str]:
    """
    :param study: A study
    :return: The parameters that take more than one value among its complete trials (not those held by ``--fixed``,
        to which an importance evaluator would still give a share)
    """
    values: dict[str, set[Any]] = defaultdict(set)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        for name, value in trial.params.items():
            values[name].add(value)
    return sorted(name for name, seen in values.items() if len(seen) > 1)


def _save_plots(study: optuna.Study, report_folder: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization.matplotlib import plot_optimization_history, plot_param_importances

    written = []
    importances = functools.partial(plot_param_importances, params=searched_parameters(study) or None)
    for name, plot in (("optimization_history", plot_optimization_history), ("param_importances", importances)):
        path = os.path.join(report_folder, f"{name}.png")
        try:
            with warnings.catch_warnings():
                # Optuna marks its matplotlib plots experimental (since 2.2)
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                axes = plot(study)
        except (ValueError, RuntimeError, ZeroDivisionError) as error:
            print(f"No {name} plot: {error}")
            continue
        figure = axes.get_figure(root=True)
        assert figure is not None
        figure.set_size_inches(9, 5)
        figure.tight_layout()
        _write_atomically(path, functools.partial(figure.savefig, dpi=100, format="png"))
        plt.close(figure)
        written.append(path)
    return written


def _write_atomically(path: str, write: Callable[[str], object]) -> None:
    """Write through a temporary file and rename it, so that workers finishing together never leave a partial file."""
    temporary = f"{path}.{os.getpid()}.tmp"
    write(temporary)
    os.replace(temporary, path)


def trial_reason(trial: optuna.trial.FrozenTrial) -> str:
    """
    :param trial: A trial
    :return: Why it was pruned or failed (empty for the others): the reason it recorded, else what its state says
    """
    if trial.state == TrialState.FAIL:
        if "fail_reason" in trial.user_attrs:
            return str(trial.user_attrs["fail_reason"])
        # Optuna's stale-trial check fails a trial whose heartbeat stopped, and records nothing
        return "its worker stopped sending heartbeats (killed, crashed or disconnected); retried once"
    if trial.state == TrialState.PRUNED:
        if "pruned_reason" in trial.user_attrs:
            return str(trial.user_attrs["pruned_reason"])
        step = trial.last_step
        return f"pruned by the pruner after evaluation {step}" if step is not None else "pruned"
    return ""


def trials_table(study: optuna.Study) -> "pandas.DataFrame":
    """:return: Optuna's table of the study's trials, with a ``reason`` column (see :func:`trial_reason`)"""
    table = study.trials_dataframe()
    table["reason"] = [trial_reason(trial) for trial in study.trials]
    return table


def write_report(
    study: optuna.Study,
    report_folder: str,
    env_id: str,
    yaml_hyperparameters: dict[str, Any],
    converter: Callable[[dict[str, Any]], dict[str, Any]],
    trials_folder: str | None,
    plots: bool = True,
    n_timesteps: int = 0,
) -> dict[str, str]:
    """
    Write ``trials.csv``, ``optimization_history.png``, ``param_importances.png``, ``best_hyperparameters.yml``
    and ``best_model.zip`` (when this machine ran the best trial) into ``report_folder``, and print a summary.

    :param study: The study
    :param report_folder: Where to write
    :param env_id: The environment's id (the YAML entry's key)
    :param yaml_hyperparameters: The entry of the YAML file the study started from
    :param converter: The algorithm's converter from a trial's parameters to hyperparameters
    :param trials_folder: Where the trials saved their best models (``trial_<number>/best_model.zip``), if anywhere
    :param plots: Whether to write the PNG plots
    :param n_timesteps: Training budget of each trial
    :return: The paths written, by kind
    """
    os.makedirs(report_folder, exist_ok=True)
    written = {"trials": os.path.join(report_folder, "trials.csv")}
    _write_atomically(written["trials"], lambda path: trials_table(study).to_csv(path, index=False))
    states = Counter(trial.state.name for trial in study.trials)
    print(
        f"Study '{study.study_name}': {len(study.trials)} trials ({', '.join(f'{n} {s}' for s, n in sorted(states.items()))})"
    )
    if plots:
        written.update({os.path.splitext(os.path.basename(path))[0]: path for path in _save_plots(study, report_folder)})

    completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not completed:
        print("No trial completed yet: no best hyperparameters")
        return written
    best = max(completed, key=lambda trial: trial.value)  # type: ignore[arg-type, return-value]
    entry = tuned_zoo_entry(yaml_hyperparameters, converter(best.params))
    header = (
        f"# Tuned: study '{study.study_name}', {len(completed)} complete of {len(study.trials)} trials"
        f" ({n_timesteps} steps each), best trial #{best.number}: mean evaluation return {best.value:.2f};"
        f" {datetime.date.today().isoformat()}\n"
    )
    snippet = header + yaml.safe_dump({env_id: entry}, sort_keys=False, default_flow_style=False, width=1000)
    written["best_hyperparameters"] = os.path.join(report_folder, "best_hyperparameters.yml")
    _write_atomically(written["best_hyperparameters"], lambda path: Path(path).write_text(snippet))
    print(f"Best trial #{best.number}, mean evaluation return {best.value:.2f}. As a zoo YAML entry:\n\n{snippet}")

    best_model = os.path.join(trials_folder or "", f"trial_{best.number}", "best_model.zip")
    if trials_folder is not None and os.path.exists(best_model):
        written["best_model"] = os.path.join(report_folder, "best_model.zip")
        _write_atomically(written["best_model"], lambda path: shutil.copyfile(best_model, path))
    else:
        print(f"The best trial's model is not on this machine (looked for {best_model})")
    print("Report: " + ", ".join(written.values()))
    return written
