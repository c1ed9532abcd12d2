"""
Optuna storages for every scale, from a string as given to ``--storage``.

- ``sqlite:///path.db`` (the embedded default) and ``postgresql://user:password@host/db`` (many machines): an
  ``RDBStorage`` with a heartbeat. A trial whose worker died (even by SIGKILL) is marked FAIL, and retried once
  with the same hyperparameters, when a worker next starts a trial (Optuna checks for stale trials then) and its
  last heartbeat is more than two intervals old. ``fail_dead_trials`` also catches a worker killed before its trial's
  first heartbeat, which Optuna's check never fails.
- ``path.log``: an Optuna journal file (one machine, several processes). Optuna's journal storage has no heartbeat:
  a trial whose worker was killed stays RUNNING; prefer SQLite when workers may die.

PostgreSQL connections are checked before use (``pool_pre_ping``: a server or firewall drops idle connections, e.g.
between two long trials) and bounded per process (a few per parallel job), and a process opens one storage per URL
(one pool), however many studies or loads it makes.
"""

import contextlib
import copy
import os
import random
import time
import warnings
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, FloatDistribution, IntDistribution
from optuna.exceptions import ExperimentalWarning, UpdateFinishedTrialError
from optuna.storages import BaseStorage, JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, NoSuchModuleError, OperationalError

DEFAULT_HEARTBEAT_INTERVAL = 60
# How long a SQLite connection waits for another process's lock before it fails
SQLITE_BUSY_TIMEOUT_S = 60
# Beyond the grace period, how long a run without any heartbeat may wait for its first one: on SQLite that write may
# wait out another process's lock (the busy timeout); on a server, a new heartbeat row waits for no lock
FIRST_HEARTBEAT_ALLOWANCE_S = {"sqlite": float(SQLITE_BUSY_TIMEOUT_S)}
NO_FIRST_HEARTBEAT = "its worker died before the trial's first heartbeat; retried once"
CREATION_ATTEMPTS = 5
# Connections of a worker's pool: its main thread and, per parallel job, the trial's thread and its heartbeat thread
POOL_SIZE = 2
CONNECTIONS_PER_JOB = 2

_opened: dict[tuple[str, int, int], BaseStorage] = {}


class StorageError(ValueError):
    """The ``--storage`` URL cannot be used: its message is one line with the cause and, where known, the fix."""


def shown_url(url: str) -> str:
    """:return: ``url`` without its password"""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def _engine_kwargs(url: str, n_jobs: int) -> dict:
    if url.startswith("sqlite"):
        # Several processes share the file: wait for the lock rather than failing at once
        return {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
    return {"pool_pre_ping": True, "pool_size": POOL_SIZE, "max_overflow": CONNECTIONS_PER_JOB * max(n_jobs, 1)}


def _first_line(error: BaseException) -> str:
    cause = getattr(error, "orig", None) or error
    text = str(cause).strip()
    return text.splitlines()[0] if text else type(cause).__name__


def _storage_error(url: str, error: BaseException) -> StorageError:
    """:return: The one-line error for a storage that cannot be opened"""
    scheme = url.split(":", 1)[0]
    if isinstance(error, NoSuchModuleError):
        hint = " (PostgreSQL's scheme is postgresql://, not postgres://)" if scheme == "postgres" else ""
        return StorageError(f"--storage {shown_url(url)}: '{scheme}' is not a database that SQLAlchemy knows{hint}")
    if isinstance(error, ArgumentError):
        return StorageError(
            f"--storage {shown_url(url)} is not a database URL: use sqlite:///path.db, "
            "postgresql://user:password@host:port/database or a path ending in .log"
        )
    if isinstance(error, ImportError):
        # Optuna re-raises a missing database driver as an ImportError of its own
        missing = error.__cause__ if isinstance(error.__cause__, ImportError) else error
        name = f" {missing.name}" if missing.name else ""
        return StorageError(
            f"--storage {shown_url(url)} needs a database driver that is not installed: the Python module{name}"
        )
    return StorageError(f"--storage {shown_url(url)} cannot be opened: {_first_line(error)}")


def make_storage(url: str, heartbeat_interval: int = DEFAULT_HEARTBEAT_INTERVAL, n_jobs: int = 1) -> BaseStorage:
    """
    :param url: ``sqlite:///...``, ``postgresql://...`` (or any SQLAlchemy URL), or a path ending in ``.log``
    :param heartbeat_interval: Seconds between heartbeats of a running trial; a trial without heartbeat for
        twice as long is considered dead
    :param n_jobs: Trials that the process runs in parallel (threads), which bounds its connections
    :return: The storage (the same object for the same arguments within a process)
    :raises StorageError: If the storage cannot be opened
    """
    if heartbeat_interval < 1:
        raise ValueError(f"heartbeat_interval must be an integer >= 1 (seconds), got {heartbeat_interval}")
    key = (url, heartbeat_interval, n_jobs)
    if key not in _opened:
        _opened[key] = _open(url, heartbeat_interval, n_jobs)
    return _opened[key]


def holds_value(distribution: BaseDistribution, value: Any) -> bool:
    """:return: Whether ``value`` lies in ``distribution`` (Optuna's own check, private; optuna is bounded)"""
    return distribution._contains(distribution.to_internal_repr(value))


def _widened(distribution: BaseDistribution, value: Any) -> BaseDistribution:
    """:return: ``distribution`` widened to hold ``value`` (a number), or itself if it holds it"""
    if holds_value(distribution, value):
        return distribution
    if isinstance(distribution, FloatDistribution):
        low, high = min(distribution.low, value), max(distribution.high, value)
        return FloatDistribution(low, high, log=distribution.log, step=distribution.step)
    if isinstance(distribution, IntDistribution):
        low, high = min(distribution.low, value), max(distribution.high, value)
        return IntDistribution(low, high, log=distribution.log, step=distribution.step)
    return distribution


def _holding_its_values(trial: FrozenTrial) -> FrozenTrial:
    """:return: A copy of ``trial`` whose distributions are widened where needed to hold its values"""
    widened = copy.deepcopy(trial)
    widened.distributions = {name: _widened(dist, trial.params[name]) for name, dist in trial.distributions.items()}
    # Why the dead trial failed is not the retry's
    widened.user_attrs = {key: value for key, value in trial.user_attrs.items() if key != "fail_reason"}
    return widened


class RetryStaleTrial(RetryHeartbeatStaleTrialCallback):
    """
    Optuna's retry of a stale trial, also for a trial that holds a value outside its parameter's distribution (``tune
    --fixed`` allows one: Pendulum's gamma 0.9). Optuna checks a new trial's values against its distributions, and
    would raise in the worker that retries it; the copy's distribution of such a parameter is widened to hold the
    value (no search widens: a fixed parameter is never sampled). The copy does not inherit the dead trial's
    ``fail_reason``.
    """

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        super().__call__(study, _holding_its_values(trial))


def _open(url: str, heartbeat_interval: int, n_jobs: int) -> BaseStorage:
    if url.endswith(".log"):
        os.makedirs(os.path.dirname(os.path.abspath(url)), exist_ok=True)
        return JournalStorage(JournalFileBackend(url))
    for attempt in range(CREATION_ATTEMPTS):
        try:
            with warnings.catch_warnings():
                # Heartbeats are marked experimental in Optuna, though they have been there since 2.x
                warnings.simplefilter("ignore", ExperimentalWarning)
                return RDBStorage(
                    url,
                    engine_kwargs=_engine_kwargs(url, n_jobs),
                    heartbeat_interval=heartbeat_interval,
                    grace_period=2 * heartbeat_interval,
                    heartbeat_stale_trial_callback=RetryStaleTrial(max_retry=1),
                )
        except IntegrityError as error:
            # Workers that start together race to create the schema of a new database: the loser retries
            if attempt == CREATION_ATTEMPTS - 1:
                raise _storage_error(url, error) from error
        except OperationalError as error:
            # The same race can surface as a lock or a missing table; an unreachable server fails every attempt
            if attempt == CREATION_ATTEMPTS - 1:
                raise _storage_error(url, error) from error
        except (ArgumentError, ImportError) as error:
            raise _storage_error(url, error) from error
        time.sleep(0.5 + random.random())
    raise AssertionError("unreachable")


def _running_without_heartbeat(storage: RDBStorage, study_id: int) -> set[int]:
    """
    :return: The ids of the study's running trials that have no heartbeat yet. Optuna has no public read of
        heartbeats: this uses its private RDB session and models (optuna is bounded in the ``zoo`` extra).
    """
    from optuna.storages._rdb.models import TrialModel
    from optuna.storages._rdb.storage import _create_scoped_session

    with _create_scoped_session(storage.scoped_session) as session:
        rows = (
            session.query(TrialModel.trial_id)
            .filter(TrialModel.study_id == study_id, TrialModel.state == TrialState.RUNNING)
            .filter(~TrialModel.heartbeats.any())
            .all()
        )
    return {trial_id for (trial_id,) in rows}


def fail_dead_trials(study: optuna.Study, first_seen_without_heartbeat: dict[int, float]) -> None:
    """
    Fail the running trials whose worker died, and retry them (the storage's stale-trial callback): those whose last
    heartbeat is older than the grace period (Optuna's stale trials), and those that this process has seen running
    without any heartbeat for a grace period. Optuna's own check skips the latter, so a worker killed between creating
    a trial and its first heartbeat (milliseconds) would leave it running for ever, and every worker that waits for
    the study's trials to end would wait with it. This process's clock times them: machines share no clock.

    A run is given the grace period and, on SQLite, the lock timeout (``FIRST_HEARTBEAT_ALLOWANCE_S``) for its first
    heartbeat, which the storage's lock may delay: a live run failed by mistake would take its worker down when it
    ends. The failed run's ``fail_reason`` says that its worker died before the first heartbeat.

    :param study: The study (a storage without heartbeat: nothing to do)
    :param first_seen_without_heartbeat: Trial id to the ``time.monotonic()`` at which this process first saw it
        running without a heartbeat; the caller keeps it between calls
    """
    # Private: Study has no public storage, and wraps an RDBStorage in a cache (optuna is bounded in the zoo extra)
    storage = study._storage
    database = getattr(storage, "_backend", storage)
    interval = database.get_heartbeat_interval() if isinstance(database, RDBStorage) else None
    if not isinstance(database, RDBStorage) or interval is None:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    allowance = FIRST_HEARTBEAT_ALLOWANCE_S.get(make_url(database.url).get_backend_name(), 0.0)
    wait_s = (database.grace_period or 2 * interval) + allowance
    now, without = time.monotonic(), _running_without_heartbeat(database, study._study_id)
    for trial_id in set(first_seen_without_heartbeat) - without:
        del first_seen_without_heartbeat[trial_id]
    for trial_id in without:
        if now - first_seen_without_heartbeat.setdefault(trial_id, now) <= wait_s:
            continue
        del first_seen_without_heartbeat[trial_id]
        # Another worker may fail it first
        with contextlib.suppress(UpdateFinishedTrialError):
            storage.set_trial_user_attr(trial_id, "fail_reason", NO_FIRST_HEARTBEAT)
            if storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                callback = database.get_heartbeat_stale_trial_callback()
                if callback is not None:
                    callback(study, copy.deepcopy(storage.get_trial(trial_id)))
