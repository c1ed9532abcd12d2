"""
A pytest plugin that runs Stable-Baselines3's own test suite with SB3's ``PPO`` replaced by one of our classes.

    python -m pytest -p sb3_suite_plugin --ppo-variant PPOClip -m "not expensive" <stable-baselines3 sdist>/tests

(``tests/`` on ``PYTHONPATH``; ``.ci/sb3-suite`` downloads the source distribution of the installed SB3 and runs it
for both classes.) Before SB3's test modules are imported, ``stable_baselines3.PPO`` becomes the chosen class, so
every ``from stable_baselines3 import PPO`` in them gets ours. Only the tests that build ``PPO`` run: those
parametrized with it (directly, or by a key of a module-level table that maps to it) and those whose code names it.

The substitution is proven, not assumed: every algorithm that a test builds (constructed or loaded) is recorded. A
test that builds SB3's own ``PPO`` fails; the run fails if no test built the chosen class; the summary counts the tests
that built it. ``--ppo-select all`` runs every collected test instead (to check that the selection misses nothing:
the summary then lists the unselected tests that built the class).

Tests that fail by design are listed in ``EXPECTED_FAILURES`` with the reason, and marked strict ``xfail``: one
that starts to pass fails the run, so the list cannot go stale.
"""

import inspect
import types
from collections import Counter
from typing import Any

import pytest

VARIANTS = ("PPOClip", "PPOPenalty")

# test id (without the parameters' part, or with it) -> reason, per class. Keep each reason the design decision.
EXPECTED_FAILURES: dict[str, dict[str, str]] = {
    "PPOClip": {
        "test_tensorboard.py::test_tensorboard[ppo]": (
            "TensorBoard run folders are named after the algorithm (PPOClip_1), as sb3-contrib's algorithms do; "
            "SB3's test expects PPO_1"
        ),
    },
    "PPOPenalty": {
        "test_tensorboard.py::test_tensorboard[ppo]": (
            "TensorBoard run folders are named after the algorithm (PPOPenalty_1), as sb3-contrib's algorithms do; "
            "SB3's test expects PPO_1"
        ),
        "test_save_load.py::test_save_load_clip_range_portable": (
            "PPOPenalty's clip_range defaults to None (the pure penalty objective); SB3's test expects PPO's 0.2"
        ),
    },
}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("sb3-suite", "SB3's test suite on sb3-ppo-variants")
    group.addoption("--ppo-variant", choices=VARIANTS, default=None, help="the class that replaces SB3's PPO")
    group.addoption(
        "--ppo-select",
        choices=("builds", "all"),
        default="builds",
        help="'builds' (default): only the tests that build PPO; 'all': every collected test",
    )


class ConstructionRecorder:
    """Records the class of every algorithm built (``__init__`` runs for ``load()`` too) while a test runs."""

    def __init__(self) -> None:
        self.built: list[type] = []

    def install(self) -> None:
        from stable_baselines3.common.base_class import BaseAlgorithm

        original_init = BaseAlgorithm.__init__
        recorder = self

        def recording_init(algorithm: Any, *args: Any, **kwargs: Any) -> None:
            recorder.built.append(type(algorithm))
            original_init(algorithm, *args, **kwargs)

        BaseAlgorithm.__init__ = recording_init  # type: ignore[method-assign]


def _names_in_code(code: types.CodeType) -> set[str]:
    """:return: The global and attribute names that ``code`` and the functions defined in it use"""
    names = set(code.co_names)
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            names |= _names_in_code(constant)
    return names


def _contains(value: Any, target: type) -> bool:
    if value is target:
        return True
    if isinstance(value, (list, tuple, set, frozenset)):
        return any(_contains(item, target) for item in value)
    if isinstance(value, dict):
        return any(_contains(item, target) for item in value.values())
    return False


def builds_ppo(item: pytest.Item, variant: type) -> bool:
    """
    :param item: A collected test
    :param variant: The class that replaced PPO
    :return: Whether the test builds PPO. A test parametrized with algorithm classes builds PPO when one of them is
        the class; otherwise, when it is parametrized with the key of a module-level table whose entry holds the
        class, or when its code names ``PPO``.
    """
    from stable_baselines3.common.base_class import BaseAlgorithm

    function = getattr(item, "function", None)
    if function is None:
        return False
    callspec = getattr(item, "callspec", None)
    parameters = list(callspec.params.values()) if callspec is not None else []
    algorithms = [value for value in parameters if isinstance(value, type) and issubclass(value, BaseAlgorithm)]
    if algorithms:
        return variant in algorithms
    if "PPO" in _names_in_code(function.__code__):
        return True
    module_tables = [value for value in vars(inspect.getmodule(function)).values() if isinstance(value, dict)]
    for value in parameters:
        if _contains(value, variant):
            return True
        if any(_is_key_of(value, table) and _contains(table[value], variant) for table in module_tables):
            return True
    return False


def _is_key_of(value: Any, table: dict) -> bool:
    try:
        return value in table
    except TypeError:  # unhashable parameter
        return False


class SB3SuitePlugin:
    """The substitution, the selection, the expected failures and the proof (see the module docstring)."""

    def __init__(self, variant_name: str, select_all: bool) -> None:
        import stable_baselines3
        import stable_baselines3.ppo

        import sb3_ppo_variants

        self.variant_name = variant_name
        self.variant: type = getattr(sb3_ppo_variants, variant_name)
        self.original: type = stable_baselines3.PPO
        self.select_all = select_all
        for module in (stable_baselines3, stable_baselines3.ppo):
            module.PPO = self.variant  # type: ignore[attr-defined]
        self.recorder = ConstructionRecorder()
        self.recorder.install()
        self.selected: set[str] = set()
        self.built_variant: set[str] = set()
        self.built_nothing: list[str] = []
        self.outcomes: Counter[str] = Counter()

    def pytest_ignore_collect(self, collection_path: Any) -> bool | None:
        # Test modules that never name PPO need not even be imported (some import optional packages, e.g. ale_py)
        if self.select_all or collection_path.suffix != ".py" or not collection_path.name.startswith("test_"):
            return None
        return True if "PPO" not in collection_path.read_text() else None

    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        kept, deselected = [], []
        for item in items:
            if builds_ppo(item, self.variant):
                self.selected.add(item.nodeid)
            if self.select_all or item.nodeid in self.selected:
                kept.append(item)
            else:
                deselected.append(item)
            reason = _expected_failure(EXPECTED_FAILURES[self.variant_name], item.nodeid)
            if reason is not None:
                item.add_marker(pytest.mark.xfail(reason=reason, strict=True))
        if deselected:
            config.hook.pytest_deselected(items=deselected)
        items[:] = kept

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Any:
        self.recorder.built.clear()
        try:
            return (yield)
        finally:
            built = set(self.recorder.built)
            if self.variant in built:
                self.built_variant.add(item.nodeid)
            elif item.nodeid in self.selected:
                self.built_nothing.append(item.nodeid)
            if self.original in built:
                pytest.fail(f"the test built SB3's own PPO although it was replaced by {self.variant_name}")

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
            self.outcomes[_outcome(report)] += 1

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if session.testscollected and not self.built_variant and not session.config.option.collectonly:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
            self.outcomes["no test built the class"] += 1

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        write = terminalreporter.write_line
        terminalreporter.section(f"SB3's test suite with PPO = {self.variant_name}")
        counts = ", ".join(f"{count} {outcome}" for outcome, count in sorted(self.outcomes.items()))
        write(f"{len(self.built_variant)} tests built {self.variant_name}; outcomes: {counts}")
        for nodeid in sorted(self.built_nothing):
            write(f"selected, but built no {self.variant_name}: {nodeid}")
        if self.select_all:
            for nodeid in sorted(self.built_variant - self.selected):
                write(f"built {self.variant_name} but would not be selected: {nodeid}")


def _outcome(report: pytest.TestReport) -> str:
    if hasattr(report, "wasxfail"):
        return "xfailed" if report.skipped else "xpassed"
    return str(report.outcome)


def _expected_failure(failures: dict[str, str], nodeid: str) -> str | None:
    """:return: The reason ``nodeid`` (``.../tests/test_x.py::test_y[params]``) is expected to fail, or None"""
    for test_id, reason in failures.items():
        if nodeid == test_id or nodeid.endswith(f"/{test_id}") or nodeid.split("[")[0].endswith(f"/{test_id}"):
            return reason
    return None


def pytest_configure(config: pytest.Config) -> None:
    variant_name = config.getoption("--ppo-variant")
    if variant_name is None:
        return
    plugin = SB3SuitePlugin(variant_name, select_all=config.getoption("--ppo-select") == "all")
    config.pluginmanager.register(plugin, "sb3-suite-substitution")
