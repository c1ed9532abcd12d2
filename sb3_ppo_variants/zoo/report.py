"""The results of a tuning study, as files a person would rather look at than a database."""

import datetime
import os
import shutil
from collections import Counter
from typing import Any

import optuna
import yaml
from optuna.trial import TrialState
from torch import nn


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


def _as_dict(policy_kwargs: str | dict[str, Any] | None) -> dict[str, Any]:
    if policy_kwargs is None:
        return {}
    if isinstance(policy_kwargs, str):
        return eval(policy_kwargs, {"nn": nn, "dict": dict})
    return dict(policy_kwargs)


def tuned_zoo_entry(
    yaml_hyperparameters: dict[str, Any], tuned: dict[str, Any], best_params: dict[str, Any]
) -> dict[str, Any]:
    """
    The YAML entry to use after tuning: the original entry with the tuned values on top.

    :param yaml_hyperparameters: The entry as read from the YAML file (schedules as ``lin_<x>`` strings)
    :param tuned: The best trial's converted hyperparameters
    :param best_params: The best trial's raw Optuna parameters
    :return: A zoo YAML entry (plain values, ``policy_kwargs`` as a string)
    """
    entry = {key: value for key, value in yaml_hyperparameters.items() if key != "policy_kwargs"}
    policy_kwargs = _as_dict(yaml_hyperparameters.get("policy_kwargs"))
    for key, value in tuned.items():
        if key == "policy_kwargs":
            policy_kwargs.update(value)
        else:
            entry[key] = value
    # PPOPenalty trials that did not combine clipping: no clip range, whatever the YAML entry had
    if best_params.get("combine_clipping") is False:
        entry.pop("clip_range", None)
    if policy_kwargs:
        entry["policy_kwargs"] = format_python(policy_kwargs)
    return dict(sorted(entry.items()))


def _save_plots(study: optuna.Study, report_folder: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization.matplotlib import plot_optimization_history, plot_param_importances

    written = []
    for name, plot in (("optimization_history", plot_optimization_history), ("param_importances", plot_param_importances)):
        path = os.path.join(report_folder, f"{name}.png")
        try:
            axes = plot(study)
        except (ValueError, RuntimeError, ZeroDivisionError) as error:
            print(f"No {name} plot: {error}")
            continue
        figure = axes.get_figure(root=True)
        assert figure is not None
        figure.set_size_inches(9, 5)
        figure.tight_layout()
        figure.savefig(path, dpi=100)
        plt.close(figure)
        written.append(path)
    return written


def write_report(
    study: optuna.Study,
    report_folder: str,
    env_id: str,
    yaml_hyperparameters: dict[str, Any],
    tuned_hyperparameters: dict[str, Any],
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
    :param tuned_hyperparameters: The best trial's converted hyperparameters (empty if no trial completed)
    :param trials_folder: Where the trials saved their best models (``trial_<number>/best_model.zip``), if anywhere
    :param plots: Whether to write the PNG plots
    :param n_timesteps: Training budget of each trial
    :return: The paths written, by kind
    """
    os.makedirs(report_folder, exist_ok=True)
    written = {"trials": os.path.join(report_folder, "trials.csv")}
    study.trials_dataframe().to_csv(written["trials"], index=False)
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
    best = study.best_trial
    entry = tuned_zoo_entry(yaml_hyperparameters, tuned_hyperparameters, best.params)
    header = (
        f"# Tuned: study '{study.study_name}', {len(completed)} complete of {len(study.trials)} trials"
        f" ({n_timesteps} steps each), best trial #{best.number}: mean evaluation return {best.value:.2f};"
        f" {datetime.date.today().isoformat()}\n"
    )
    snippet = header + yaml.safe_dump({env_id: entry}, sort_keys=False, default_flow_style=False, width=1000)
    written["best_hyperparameters"] = os.path.join(report_folder, "best_hyperparameters.yml")
    with open(written["best_hyperparameters"], "w") as file:
        file.write(snippet)
    print(f"Best trial #{best.number}, mean evaluation return {best.value:.2f}. As a zoo YAML entry:\n\n{snippet}")

    best_model = os.path.join(trials_folder or "", f"trial_{best.number}", "best_model.zip")
    if trials_folder is not None and os.path.exists(best_model):
        written["best_model"] = os.path.join(report_folder, "best_model.zip")
        shutil.copyfile(best_model, written["best_model"])
    else:
        print(f"The best trial's model is not on this machine (looked for {best_model})")
    print("Report: " + ", ".join(written.values()))
    return written
