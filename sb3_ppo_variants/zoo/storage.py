"""
Optuna storages for every scale, from a string as given to ``--storage``.

- ``sqlite:///path.db`` (the embedded default) and ``postgresql://user:password@host/db`` (many machines): an
  ``RDBStorage`` with a heartbeat, so that a trial whose worker died (even by SIGKILL) is marked FAIL by the next
  worker that starts a trial, and retried once with the same hyperparameters.
- ``path.log``: an Optuna journal file (one machine, several processes). Optuna's journal storage has no heartbeat:
  a trial whose worker was killed stays RUNNING; prefer SQLite when workers may die.
"""

import os
import random
import time
import warnings

from optuna.exceptions import ExperimentalWarning
from optuna.storages import BaseStorage, JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend
from sqlalchemy.exc import IntegrityError, OperationalError

DEFAULT_HEARTBEAT_INTERVAL = 60
CREATION_ATTEMPTS = 5


def make_storage(url: str, heartbeat_interval: int = DEFAULT_HEARTBEAT_INTERVAL) -> BaseStorage:
    """
    :param url: ``sqlite:///...``, ``postgresql://...`` (or any SQLAlchemy URL), or a path ending in ``.log``
    :param heartbeat_interval: Seconds between heartbeats of a running trial; a trial without heartbeat for
        twice as long is considered dead
    :return: The storage
    """
    if heartbeat_interval < 1:
        raise ValueError(f"heartbeat_interval must be an integer >= 1 (seconds), got {heartbeat_interval}")
    if url.endswith(".log"):
        os.makedirs(os.path.dirname(os.path.abspath(url)), exist_ok=True)
        return JournalStorage(JournalFileBackend(url))
    engine_kwargs = {}
    if url.startswith("sqlite"):
        # Several processes share the file: wait for the lock rather than failing at once
        engine_kwargs = {"connect_args": {"timeout": 60}}
    for attempt in range(CREATION_ATTEMPTS):
        try:
            with warnings.catch_warnings():
                # Heartbeats are marked experimental in Optuna, though they have been there since 2.x
                warnings.simplefilter("ignore", ExperimentalWarning)
                return RDBStorage(
                    url,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=heartbeat_interval,
                    grace_period=2 * heartbeat_interval,
                    heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1),
                )
        except (IntegrityError, OperationalError):
            # Workers that start together race to create the schema of a new database: the loser retries
            if attempt == CREATION_ATTEMPTS - 1:
                raise
            time.sleep(0.5 + random.random())
    raise AssertionError("unreachable")
