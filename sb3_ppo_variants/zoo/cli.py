"""
The ``sb3-ppo-variants`` command: rl_zoo3's ``train`` and ``enjoy`` with ``ppo_clip`` and ``ppo_penalty`` registered,
this package's ``zoo_configs/`` as the default ``--conf-file``, and fault-tolerant tuning.

    sb3-ppo-variants train --algo ppo_penalty --env CartPole-v1            # train with zoo_configs/ppo_penalty.yml
    sb3-ppo-variants tune --env CartPole-v1                                # tune PPOPenalty locally (SQLite)
    sb3-ppo-variants train --algo ppo_penalty --env CartPole-v1 -optimize --storage postgresql://... --study-name s
    sb3-ppo-variants enjoy --algo ppo_penalty --env CartPole-v1 -f logs/
    sb3-ppo-variants validate --env CartPole-v1                            # re-train the study's best on fresh seeds

Every flag after the command is rl_zoo3's own (``--n-trials``, ``--max-total-trials``, ``--storage``,
``--study-name``, ``--sampler``, ``--pruner``, ``--n-jobs``, ``-params``, ``--trial-id``, ...), plus, for tuning:

    --trial-seeds K            seeds each trial trains, its value their mean (default: 3 for tune, 1 for train)
    --sampler-seed N           the sampler's seed (default: a new one per worker, printed)
    --heartbeat-interval S     seconds between a running trial's heartbeats (default 60)
    --fixed NAME:VALUE ...     hold these parameters of the search space (as trials.csv names them) at these values

``tune`` is ``train --optimize-hyperparameters --progress`` with the defaults ``--algo ppo_penalty --n-trials 20
--n-timesteps 20000 --n-evaluations 4 --trial-seeds 3``, each overridable. ``enjoy`` without ``--exp-id`` loads the
newest experiment that holds a model. ``validate`` has flags of its own (``validate --help``).
"""

import argparse
import dataclasses
import functools
import glob
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from sb3_ppo_variants.zoo.registration import ZOO_ALGOS, register_algorithms, zoo_config_path
from sb3_ppo_variants.zoo.storage import DEFAULT_HEARTBEAT_INTERVAL, StorageError, make_storage, shown_url

COMMANDS = ("train", "tune", "enjoy", "validate")
TUNE_DEFAULTS = ["--n-trials", "20", "--n-timesteps", "20000", "--n-evaluations", "4"]
TUNE_TRIAL_SEEDS = 3

# rl_zoo3's integer flags of a study, what they count, and their least value (-n's default -1: the YAML's budget)
STUDY_FLAGS = {
    "--n-trials": ("trials per worker", 1),
    "--max-total-trials": ("trials in the whole study", 1),
    "--n-evaluations": ("evaluations per trial", 1),
    "--eval-episodes": ("episodes per evaluation", 1),
    "--n-startup-trials": ("random trials before the sampler models the results", 0),
    "--n-jobs": ("parallel trials in one worker", 1),
}


def _fail(command: str, message: str) -> NoReturn:
    print(f"sb3-ppo-variants {command}: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def _effective_flags(args: Sequence[str]) -> argparse.Namespace:
    """The flags as rl_zoo3's parser will read them (last value wins, abbreviations allowed); integers as given."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--algo", default=None)
    parser.add_argument("-conf", "--conf-file", default=None)
    parser.add_argument("-n", "--n-timesteps", default=None)
    parser.add_argument("--storage", default=None)
    parser.add_argument("-optimize", "--optimize-hyperparameters", action="store_true")
    for flag in STUDY_FLAGS:
        parser.add_argument(flag, default=None)
    return parser.parse_known_args(list(args))[0]


def _integer(value: str | None) -> int | None:
    try:
        return None if value is None else int(value)
    except ValueError:
        return None  # rl_zoo3's parser rejects it, with its own message


def _below_least(flag: str, value: int | None, least: int, meaning: str = "") -> str | None:
    """:return: The one-line error for an integer flag below its least value (None if unset or in range)"""
    if value is None or value >= least:
        return None
    return f"{flag} must be an integer >= {least}{f' ({meaning})' if meaning else ''}, got {value}"


def argument_error(zoo_args: Sequence[str]) -> str | None:
    """
    :param zoo_args: Arguments for rl_zoo3's ``train``
    :return: Why a study's count or budget is out of range (one line), or None if none is
    """
    flags = _effective_flags(zoo_args)
    for flag, (meaning, least) in STUDY_FLAGS.items():
        error = _below_least(flag, _integer(getattr(flags, flag.lstrip("-").replace("-", "_"))), least, meaning)
        if error is not None:
            return error
    timesteps = _integer(flags.n_timesteps)
    if timesteps is not None and timesteps != -1 and timesteps < 1:
        return f"--n-timesteps must be an integer >= 1 (steps per training run), or -1 for the YAML entry's, got {timesteps}"
    return None


def zoo_arguments(command: str, args: Sequence[str]) -> list[str]:
    """
    The rl_zoo3 arguments that a ``sb3-ppo-variants`` command line stands for.

    Defaults go before the user's arguments: for rl_zoo3's parser the last value of a flag wins, so anything the
    user gives (in any spelling argparse accepts, e.g. ``--alg`` or ``-n5``) overrides them.

    :param command: ``train``, ``tune`` or ``enjoy``
    :param args: The arguments after the command, without this package's own flags
    :return: Arguments for rl_zoo3's ``train`` or ``enjoy``
    """
    defaults = ["--algo", "ppo_penalty"]
    if command == "tune":
        defaults += [*TUNE_DEFAULTS, "--optimize-hyperparameters", "--progress"]
    zoo_args = [*defaults, *args]
    flags = _effective_flags(zoo_args)
    if command != "enjoy" and flags.algo in ZOO_ALGOS and flags.conf_file is None:
        zoo_args = ["--conf-file", str(zoo_config_path(flags.algo)), *zoo_args]
    return zoo_args


def _model_file_pattern(flags: argparse.Namespace, env_name: str) -> str:
    """:return: The file of an experiment folder that ``enjoy`` loads with these flags (a glob pattern)"""
    if flags.load_best:
        return "best_model.zip"
    if flags.load_checkpoint is not None:
        return f"rl_model_{flags.load_checkpoint}_steps.zip"
    if flags.load_last_checkpoint:
        return "rl_model_*_steps.zip"
    return f"{env_name}.zip"


def enjoy_arguments(zoo_args: list[str]) -> list[str]:
    """
    rl_zoo3's ``enjoy`` loads the newest experiment folder (``<folder>/<algo>/<env>_<n>``) when ``--exp-id`` is 0,
    even one without a model (as the folder that a study leaves): here the newest that holds the model to load.

    :param zoo_args: Arguments for rl_zoo3's ``enjoy``
    :return: The arguments, with ``--exp-id`` of that experiment where the user gave none (or 0)
    :raises ValueError: If experiment folders exist and none holds the model (the message says where to look)
    """
    from rl_zoo3.utils import EnvironmentName

    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("-f", "--folder", default="rl-trained-agents")
    parser.add_argument("--algo", default="ppo")
    parser.add_argument("--exp-id", type=int, default=0)
    parser.add_argument("--load-best", action="store_true")
    parser.add_argument("--load-checkpoint", type=int, default=None)
    parser.add_argument("--load-last-checkpoint", action="store_true")
    flags = parser.parse_known_args(zoo_args)[0]
    if flags.exp_id != 0:
        return zoo_args
    env_name = str(EnvironmentName(flags.env))
    pattern = _model_file_pattern(flags, env_name)
    experiments = {}
    for path in glob.glob(os.path.join(flags.folder, flags.algo, f"{glob.escape(env_name)}_*")):
        suffix = path.rsplit("_", 1)[-1]
        if suffix.isdigit() and os.path.isdir(path):
            experiments[int(suffix)] = path
    if not experiments:
        return zoo_args  # rl_zoo3's own handling (e.g. the download of rl-trained-agents)
    with_model = [number for number, path in experiments.items() if glob.glob(os.path.join(glob.escape(path), pattern))]
    if not with_model:
        reports = glob.glob(os.path.join(glob.escape(flags.folder), glob.escape(flags.algo), "*", "report", "best_model.zip"))
        tuned = f"; a study's best model is its report's best_model.zip ({', '.join(sorted(reports))})" if reports else ""
        raise ValueError(
            f"no experiment in {os.path.join(flags.folder, flags.algo, env_name + '_<n>')} holds {pattern} "
            f"(train one with sb3-ppo-variants train){tuned}"
        )
    newest = max(with_model)
    if newest != max(experiments):
        print(f"Loading experiment {newest}, the newest with {pattern} (newer ones hold no model, e.g. a study's)")
    return [*zoo_args, "--exp-id", str(newest)]


def _own_arguments(command: str, argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """:return: This package's flags (checked) and the rest of the command line"""
    # No abbreviations: --sampler (rl_zoo3's) must not read as --sampler-seed, nor --trial (--trial-id) as --trial-seeds
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--heartbeat-interval", default=str(DEFAULT_HEARTBEAT_INTERVAL))
    parser.add_argument("--trial-seeds", default=str(TUNE_TRIAL_SEEDS if command == "tune" else 1))
    parser.add_argument("--sampler-seed", default=None)
    parser.add_argument("--fixed", nargs="+", action="extend", default=[])
    own_args, rest = parser.parse_known_args(list(argv))
    for flag in ("heartbeat_interval", "trial_seeds", "sampler_seed"):
        value = getattr(own_args, flag)
        if value is not None and _integer(value) is None:
            _fail(command, f"--{flag.replace('_', '-')} must be an integer, got {value!r}")
        setattr(own_args, flag, _integer(value))
    for error in (
        _below_least("--heartbeat-interval", own_args.heartbeat_interval, 1, "seconds"),
        _below_least("--trial-seeds", own_args.trial_seeds, 1, "seeds per trial"),
        _below_least("--sampler-seed", own_args.sampler_seed, 0),
    ):
        if error is not None:
            _fail(command, error)
    return own_args, rest


def _fixed_parameters(command: str, specs: list[str], zoo_args: Sequence[str]) -> dict[str, Any]:
    """:return: The ``--fixed`` values, checked against the algorithm's search space (its notes printed)"""
    if not specs:
        return {}
    flags = _effective_flags(zoo_args)
    if not flags.optimize_hyperparameters:
        _fail(command, "--fixed holds parameters of a hyperparameter search: use it with tune (or train -optimize)")
    from rl_zoo3.hyperparams_opt import HYPERPARAMS_SAMPLER

    from sb3_ppo_variants.zoo.search_spaces import FixedParameterError, fixed_parameters, search_space

    if flags.algo not in HYPERPARAMS_SAMPLER:
        _fail(command, f"--fixed: rl_zoo3 has no search space for --algo {flags.algo}")
    try:
        fixed, notes = fixed_parameters(specs, search_space(HYPERPARAMS_SAMPLER[flags.algo]))
    except FixedParameterError as error:
        _fail(command, str(error))
    for note in notes:
        print(note)
    return fixed


def _validate_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sb3-ppo-variants validate",
        description="Re-train a study's best trials, the current YAML entry and SB3 PPO's zoo entry on fresh seeds at the "
        "entry's budget; report each one's mean and 95%% interval, Welch's tests, and the YAML entry the evidence supports.",
    )
    parser.add_argument("--env", required=True, help="environment id (an entry of zoo_configs/)")
    parser.add_argument("--algo", default="ppo_penalty", choices=sorted(ZOO_ALGOS))
    parser.add_argument("-f", "--log-folder", default="logs", help="the tuning's log folder (default: logs)")
    parser.add_argument("--study-name", default=None, help="the tuning study (default: <algo>-<env>, as tune names it)")
    parser.add_argument("--storage", default=None, help="its storage (default: the study's SQLite file under the log folder)")
    parser.add_argument("--top", type=int, default=None, help="best complete trials to validate (default 3; 0: none)")
    parser.add_argument(
        "--trials", type=int, nargs="+", default=None, metavar="N", help="these complete trials instead of the best"
    )
    parser.add_argument("--seeds", type=int, default=10, help="seeds per candidate (default 10)")
    parser.add_argument("--first-seed", type=int, default=1000, help="the first seed (default 1000)")
    parser.add_argument("--eval-episodes", type=int, default=10, help="evaluation episodes per run (default 10)")
    parser.add_argument("--workers", type=int, default=None, help="worker processes on this machine (default: one per core)")
    parser.add_argument("--no-sb3", action="store_true", help="leave SB3 PPO's zoo entry out")
    parser.add_argument(
        "-n", "--n-timesteps", type=int, default=None, help="a budget for every candidate instead of the entry's"
    )
    parser.add_argument(
        "--fast-mode",
        action="store_true",
        help="train this package's candidates with fast_mode=True (compiled); SB3 PPO trains as SB3 does",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="write and print the table of the runs done so far, and take no run (the same arguments as the validation's)",
    )
    parser.add_argument("--validation-name", default=None, help="the validation study (default: <study>-validation)")
    parser.add_argument("--heartbeat-interval", type=int, default=DEFAULT_HEARTBEAT_INTERVAL)
    return parser


def validate(argv: Sequence[str]) -> None:
    """The ``validate`` command (see :mod:`sb3_ppo_variants.zoo.validation`)."""
    import optuna

    from sb3_ppo_variants.zoo import validation
    from sb3_ppo_variants.zoo.seeds import available_cores

    args = _validate_parser().parse_args(list(argv))
    for error in (
        _below_least("--top", args.top, 0, "best trials"),
        _below_least("--seeds", args.seeds, 2, "seeds per candidate"),
        _below_least("--first-seed", args.first_seed, 0),
        _below_least("--eval-episodes", args.eval_episodes, 1, "episodes per run"),
        _below_least("--workers", args.workers, 1, "processes on this machine"),
        _below_least("--n-timesteps", args.n_timesteps, 1, "steps per run"),
        _below_least("--heartbeat-interval", args.heartbeat_interval, 1, "seconds"),
    ):
        if error is not None:
            _fail("validate", error)
    if args.trials is not None and args.top is not None:
        _fail("validate", "give --top (the best trials) or --trials (trials by number), not both")
    top = 3 if args.top is None else args.top
    from_study = top > 0 or args.trials is not None
    without = "or --top 0 without --trials"
    study_name = args.study_name or f"{args.algo}-{args.env}"
    study_folder = os.path.join(args.log_folder, args.algo, study_name)
    url = args.storage or f"sqlite:///{os.path.abspath(os.path.join(study_folder, 'study.db'))}"
    if args.storage is None:
        if from_study and not os.path.exists(os.path.join(study_folder, "study.db")):
            _fail("validate", f"no study at {shown_url(url)}: run tune first, give --storage and --study-name, {without}")
        os.makedirs(study_folder, exist_ok=True)
    try:
        storage = make_storage(url, args.heartbeat_interval)
        tuning = optuna.load_study(study_name=study_name, storage=storage) if from_study else None
    except StorageError as error:
        _fail("validate", str(error))
    except KeyError:
        _fail("validate", f"no study named {study_name} in {shown_url(url)}: give --study-name, {without}")

    validation_name = args.validation_name or f"{study_name}-validation"
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    try:
        found = validation.candidates(args.algo, args.env, tuning, top, not args.no_sb3, args.trials)
        if args.n_timesteps is not None:
            found = [dataclasses.replace(c, entry={**c.entry, "n_timesteps": args.n_timesteps}) for c in found]
        if args.fast_mode:
            found = validation.in_fast_mode(found)
        if args.report_only and validation_name not in optuna.get_all_study_names(storage):
            _fail(
                "validate",
                f"no validation study {validation_name} in {shown_url(url)} to report: start it without --report-only",
            )
        validation_study = validation.open_validation(storage, validation_name, args.env, found, seeds, args.eval_episodes)
    except ValueError as error:
        _fail("validate", str(error))
    if not args.report_only:
        workers = args.workers or available_cores()
        print(f"Validation study '{validation_name}' in {shown_url(url)}: {workers} worker(s) on this machine")
        validation.run_workers(url, validation_name, args.heartbeat_interval, workers)
    summaries, seeds = validation.summarize(validation_study)
    env_id, eval_episodes = validation_study.user_attrs["env_id"], validation_study.user_attrs["eval_episodes"]
    folder = os.path.join(study_folder, "validation")
    print(validation.write_outputs(folder, summaries, seeds, env_id, eval_episodes))
    print(f"Written: {os.path.join(folder, 'validation.md')}, {os.path.join(folder, 'validation.csv')}")


def main(argv: Sequence[str] | None = None) -> None:
    """
    :param argv: Command line without the program name (default: ``sys.argv[1:]``)
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        print(__doc__)
        raise SystemExit(0 if argv[:1] in (["-h"], ["--help"]) else 2)
    command = argv[0]
    if command == "validate":
        validate(argv[1:])
        return
    own_args, rest = _own_arguments(command, argv[1:])
    register_algorithms()
    zoo_args = zoo_arguments(command, rest)
    fixed_params = _fixed_parameters(command, own_args.fixed, zoo_args)
    if command == "enjoy":
        from rl_zoo3.enjoy import enjoy

        try:
            sys.argv = [f"sb3-ppo-variants {command}", *enjoy_arguments(zoo_args)]
        except ValueError as no_model:
            _fail(command, str(no_model))
        enjoy()
        return

    out_of_range = argument_error(zoo_args)
    if out_of_range is not None:
        _fail(command, out_of_range)
    import rl_zoo3.train

    from sb3_ppo_variants.zoo.experiment import TuningExperimentManager

    sys.argv = [f"sb3-ppo-variants {command}", *zoo_args]
    rl_zoo3.train.ExperimentManager = functools.partial(  # type: ignore[misc, assignment]
        TuningExperimentManager,
        heartbeat_interval=own_args.heartbeat_interval,
        trial_seeds=own_args.trial_seeds,
        sampler_seed=own_args.sampler_seed,
        fixed_params=fixed_params,
    )
    try:
        storage = _effective_flags(zoo_args).storage
        if storage is not None:
            # Before rl_zoo3 reads and prints the hyperparameters: a bad URL is one line, at once
            make_storage(storage, own_args.heartbeat_interval, n_jobs=_integer(_effective_flags(zoo_args).n_jobs) or 1)
        rl_zoo3.train.train()
    except StorageError as storage_error:
        _fail(command, str(storage_error))


if __name__ == "__main__":
    main()
