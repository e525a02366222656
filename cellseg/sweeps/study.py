"""One Optuna study shared by every worker: its storage, the trial budget, and which trial a worker runs next.

Storage: by default Optuna's journal file (`<study folder>/journal.log`), an append-only log whose writers take
Optuna's symlink lock, so workers on several nodes of a shared file system can use it (SQLite cannot: its
`fcntl` locks are broken on many NFS servers). `hparams_search.storage` may name an RDB URL instead
(`postgresql://...`, `mysql://...`, `sqlite:///...` for one machine).

Budget and hand-out: a worker takes its next trial under a lock file in the study folder (Optuna's symlink lock
again), so N workers never start more than `n_trials` trials between them. Every trial records the worker that
runs it (`worker`, `host`, `pid`). A worker that restarts after being killed (a requeued SLURM job, a restarted
process with the same `hparams_search.worker`) first takes back the trials it left RUNNING, with their sampled
values, and finishes them; a trial is neither lost nor drawn twice. Failed trials count against the budget and
are not retried (their error is kept in the trial's `error` attribute).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import hydra
import optuna
from omegaconf import DictConfig
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock
from optuna.trial import TrialState

from cellseg.sweeps.search_space import space_of, suggest

log = logging.getLogger(__name__)

JOURNAL_NAME = "journal.log"
HANDOUT_NAME = "handout"  # the lock is handout.lock beside the journal
# Study attributes: the train overrides every trial repeats, and the objective's name.
BASE_OVERRIDES_ATTR, OBJECTIVE_ATTR = "overrides", "objective"


@dataclass(frozen=True)
class TrialRequest:
    """What every rank of a worker needs to run one trial."""

    number: int
    params: dict
    resumed: bool  # taken back from an earlier run of this worker (it left the trial RUNNING)


def journal_storage(folder: Path) -> JournalStorage:
    return JournalStorage(JournalFileBackend(str(folder / JOURNAL_NAME)))


def storage_for(search: DictConfig, folder: Path):
    """The study's storage: `hparams_search.storage` (an RDB URL) or the journal file in `folder`."""
    url = search.get("storage")
    if url:
        return url
    folder.mkdir(parents=True, exist_ok=True)
    return journal_storage(folder)


def open_study(search: DictConfig, folder: Path, pruner: optuna.pruners.BasePruner | None = None) -> optuna.Study:
    return optuna.create_study(study_name=search.study_name, storage=storage_for(search, folder),
                               direction=search.direction, pruner=pruner, load_if_exists=True)


def record_search(study: optuna.Study, base_overrides: list[str], objective: str) -> None:
    """The first worker writes what the study searches; a later worker with other overrides is told so."""
    known = study.user_attrs.get(BASE_OVERRIDES_ATTR)
    if known is None:
        study.set_user_attr(BASE_OVERRIDES_ATTR, list(base_overrides))
        study.set_user_attr(OBJECTIVE_ATTR, objective)
    elif sorted(known) != sorted(base_overrides):
        log.warning("this worker's overrides %s differ from the study's %s: its trials are not comparable",
                    base_overrides, known)


def worker_identity(worker) -> dict:
    return {"worker": str(worker), "host": socket.gethostname(), "pid": os.getpid()}


@contextmanager
def handout_lock(folder: Path) -> Iterator[None]:
    lock = JournalFileSymlinkLock(str(folder / HANDOUT_NAME))  # blocks; a lock older than 30 s is broken
    lock.acquire()
    try:
        yield
    finally:
        lock.release()


def next_trial(study: optuna.Study, search: DictConfig, folder: Path, worker) -> TrialRequest | None:
    """This worker's interrupted trial if it left one, else a new trial within the budget, else None."""
    space = space_of(search.params)
    with handout_lock(folder):
        trials = study.get_trials(deepcopy=False)
        mine = [t for t in trials if t.state == TrialState.RUNNING and t.user_attrs.get("worker") == str(worker)]
        if mine:
            refuse_if_alive(mine[0])
            trial = mine[0]
            for key, value in worker_identity(worker).items():
                study._storage.set_trial_user_attr(trial._trial_id, key, value)
            return TrialRequest(trial.number, {name: trial.params[name] for name in space}, resumed=True)
        if len(trials) >= int(search.n_trials):
            return None
        # The sampler is seeded by the trial number: the values depend on the study's history, not on the worker.
        study.sampler = hydra.utils.instantiate(search.sampler, seed=int(search.seed) + len(trials))
        trial = study.ask()
        for key, value in worker_identity(worker).items():
            trial.set_user_attr(key, value)
        params = {name: suggest(trial, name, spec) for name, spec in space.items()}
    return TrialRequest(trial.number, params, resumed=False)


def refuse_if_alive(trial: optuna.trial.FrozenTrial) -> None:
    """Two live processes with one worker id would run one trial twice: refuse the second (same host only)."""
    host, pid = trial.user_attrs.get("host"), trial.user_attrs.get("pid")
    if host != socket.gethostname() or pid is None or pid == os.getpid():
        return
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return
    except PermissionError:
        pass
    raise RuntimeError(f"trial {trial.number} is RUNNING in worker {trial.user_attrs['worker']} (pid {pid} on "
                       f"{host}, still alive): give this worker another hparams_search.worker")


def trial_id(study: optuna.Study, number: int) -> int:
    return study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)


def record_failure(study: optuna.Study, number: int, error: str) -> None:
    study._storage.set_trial_user_attr(trial_id(study, number), "error", error[:2000])
    study.tell(number, state=TrialState.FAIL)


def counts(study: optuna.Study) -> dict[str, int]:
    states = [t.state.name for t in study.get_trials(deepcopy=False)]
    return {state: states.count(state) for state in sorted(set(states))}
