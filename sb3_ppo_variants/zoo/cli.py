"""
The ``sb3-ppo-variants`` command: rl_zoo3's ``train`` and ``enjoy`` with ``ppo_clip`` and ``ppo_penalty`` registered,
this package's ``zoo_configs/`` as the default ``--conf-file``, and fault-tolerant tuning.

    sb3-ppo-variants train --algo ppo_penalty --env CartPole-v1            # train with zoo_configs/ppo_penalty.yml
    sb3-ppo-variants tune --env CartPole-v1                                # tune PPOPenalty locally (SQLite)
    sb3-ppo-variants train --algo ppo_penalty --env CartPole-v1 -optimize --storage postgresql://... --study-name s
    sb3-ppo-variants enjoy --algo ppo_penalty --env CartPole-v1 -f logs/

Every flag after the command is rl_zoo3's own (``--n-trials``, ``--max-total-trials``, ``--storage``,
``--study-name``, ``--sampler``, ``--pruner``, ``--n-jobs``, ``-params``, ``--trial-id``, ...), plus
``--heartbeat-interval SECONDS`` (default 60) for tuning. ``tune`` is ``train --optimize-hyperparameters --progress``
with the defaults ``--algo ppo_penalty --n-trials 20 --n-timesteps 20000 --n-evaluations 4``, each overridable.
"""

import argparse
import functools
import sys
from collections.abc import Sequence

from sb3_ppo_variants.zoo.registration import ZOO_ALGOS, register_algorithms, zoo_config_path
from sb3_ppo_variants.zoo.storage import DEFAULT_HEARTBEAT_INTERVAL

COMMANDS = ("train", "tune", "enjoy")
TUNE_DEFAULTS = ["--n-trials", "20", "--n-timesteps", "20000", "--n-evaluations", "4"]


def _effective_flags(args: Sequence[str]) -> argparse.Namespace:
    """``--algo`` and ``--conf-file`` as rl_zoo3's parser will read them (last value wins, abbreviations allowed)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--algo", default=None)
    parser.add_argument("-conf", "--conf-file", default=None)
    return parser.parse_known_args(list(args))[0]


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


def main(argv: Sequence[str] | None = None) -> None:
    """
    :param argv: Command line without the program name (default: ``sys.argv[1:]``)
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        print(__doc__)
        raise SystemExit(0 if argv[:1] in (["-h"], ["--help"]) else 2)
    command = argv[0]
    own_parser = argparse.ArgumentParser(add_help=False)
    own_parser.add_argument("--heartbeat-interval", type=int, default=DEFAULT_HEARTBEAT_INTERVAL)
    own_args, rest = own_parser.parse_known_args(argv[1:])

    register_algorithms()
    sys.argv = [f"sb3-ppo-variants {command}", *zoo_arguments(command, rest)]
    if command == "enjoy":
        from rl_zoo3.enjoy import enjoy

        enjoy()
        return

    import rl_zoo3.train

    from sb3_ppo_variants.zoo.experiment import TuningExperimentManager

    rl_zoo3.train.ExperimentManager = functools.partial(  # type: ignore[misc, assignment]
        TuningExperimentManager, heartbeat_interval=own_args.heartbeat_interval
    )
    rl_zoo3.train.train()


if __name__ == "__main__":
    main()
