"""The orchestrator: starts every party, restarts killed writers, collects while a writer is stopped, kills
writers now and then; then the checker judges the rows and what is left (:func:`run_soak`)."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from soak.checker import leftovers, read_records, verify_rows
from soak.collectors import collector_main
from soak.config import STATS, TABLES, Services, SoakConfig, SoakResult
from soak.content import declare_tables, resumable_fields
from soak.deleters import deleter_main
from soak.shared import Shared, app_name
from soak.writers import writer_main


def process_state(pid: int) -> str:
    """The state letter of process ``pid`` (``T``: stopped by a signal); ``X`` if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0]
    except OSError:  # gone, or being torn down
        return "X"


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` until it holds; ``TimeoutError`` naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout} s")
        time.sleep(0.01)


class Orchestrator:
    """Starts the processes, restarts killed writers, handles pauses, kills writers now and then."""

    def __init__(self, config: SoakConfig, services: Services, schema: Any) -> None:
        import multiprocessing

        self.config = config
        self.services = services
        self.schema = schema
        self.context = multiprocessing.get_context("spawn")
        slots = config.writers + config.deleters + config.collectors
        resumable = len(TABLES) * config.resume_key_space * len(resumable_fields(config.stores))
        self.shared = Shared(slots, config.writers, resumable)
        self.writers: list[Any] = [None] * config.writers
        self.incarnations = [0] * config.writers
        self.others: list[Any] = []
        self.rng = random.Random(f"{config.seed}:orchestrator")
        self.counts = {"orchestrator_kills": 0, "restarts": 0, "pause_collections": 0, "final_collections": 0}
        self.collected = 0
        self.errors: list[str] = []

    def _start_writer(self, slot: int) -> None:
        args = (slot, self.incarnations[slot], self.config, self.services, self.schema.database, self.shared)
        process = self.context.Process(target=writer_main, args=args, name=f"soak-writer-{slot}", daemon=True)
        process.start()
        self.writers[slot] = process

    def start(self) -> None:
        c = self.config
        for slot in range(c.writers):
            self._start_writer(slot)
        for index in range(c.deleters):
            self._start_other(deleter_main, c.writers + index, f"soak-deleter-{index}")
        for index in range(c.collectors):
            self._start_other(collector_main, c.writers + c.deleters + index, f"soak-collector-{index}")

    def _start_other(self, target: Callable[..., None], slot: int, name: str) -> None:
        args = (slot, self.config, self.services, self.schema.database, self.shared)
        process = self.context.Process(target=target, args=args, name=name, daemon=True)
        process.start()
        self.others.append(process)

    def collect_all(self, resume_window: float | None = None) -> int:
        """One ``grace=0`` collection of every store, here, keeping interrupted resumable writes for
        ``resume_window`` (the soak's, unless given); returns the objects deleted."""
        import dj_staged.gc

        window = self.config.resume_window if resume_window is None else resume_window
        deleted = 0
        for store in self.services.store_names:
            report = dj_staged.gc.collect(self.schema, store=store, grace=0, resume_window=window, dry_run=False)
            if report.errors:
                self.errors.append(f"orchestrator collection on {store}: {report.errors}")
            deleted += report.deleted
        self.collected += deleted
        return deleted

    def run(self) -> None:
        """Until every writer has used its share: restart the killed, serve the stopped, kill now and then."""
        c = self.config
        deadline = time.monotonic() + c.timeout
        every = c.kill_every
        next_kill = self.rng.randint(max(1, every // 2), max(1, every * 3 // 2)) if every else None
        finished = [False] * c.writers
        while not all(finished):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the soak did not finish within {c.timeout} s")
            for slot, process in enumerate(self.writers):
                if finished[slot]:
                    continue
                if process.exitcode is not None:
                    process.join()
                    if process.exitcode != -signal.SIGKILL and process.exitcode != 0:
                        self.errors.append(f"writer {slot} exited with code {process.exitcode}")
                    if self.shared.done[slot] >= c.quota(slot):
                        finished[slot] = True
                    else:
                        self.incarnations[slot] += 1
                        self.counts["restarts"] += 1
                        self._start_writer(slot)
                elif process_state(process.pid) == "T":
                    self.collect_all()
                    self.counts["pause_collections"] += 1
                    os.kill(process.pid, signal.SIGCONT)
            if next_kill is not None and sum(self.shared.done) >= next_kill:
                alive = [p for slot, p in enumerate(self.writers) if not finished[slot] and p.exitcode is None]
                if alive:
                    victim = self.rng.choice(alive)
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(victim.pid, signal.SIGKILL)
                    self.counts["orchestrator_kills"] += 1
                next_kill += self.rng.randint(max(1, every // 2), max(1, every * 3 // 2))
            time.sleep(0.005)
        self.shared.stop.value = 1
        for process in self.others:
            process.join(max(1.0, deadline - time.monotonic()))
            if process.exitcode is None:
                raise TimeoutError(f"{process.name} did not stop")
            if process.exitcode != 0:
                self.errors.append(f"{process.name} exited with code {process.exitcode}")

    def kill_all(self) -> None:
        """After a failure: SIGKILL every process still running (they are all ours)."""
        for process in [*self.writers, *self.others]:
            if process is not None and process.exitcode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGKILL)
                process.join(10)

    def stats(self) -> dict[str, int]:
        totals = {name: self.shared.total(name) for name in STATS}
        totals.update(self.counts)
        totals["collected"] += self.collected
        return totals


def run_soak(config: SoakConfig, services: Services) -> SoakResult:
    """Run the workload, then verify every row and what is left in the stores."""
    import datajoint as dj

    from dj_staged.testing.services import PostgresInfo

    started = time.monotonic()
    workdir = Path(services.workdir)
    saved_stores = dict(dj.config.stores)
    dj.config.stores = services.stores
    dj.config.database.backend = "postgresql"
    pg = PostgresInfo(**services.db)
    connection = dj.Connection(pg.host, pg.user, pg.password, pg.port)
    schema = dj.Schema(f"soak_{config.seed}_{uuid.uuid4().hex[:8]}", connection=connection)
    orchestrator: Orchestrator | None = None
    try:
        tables = declare_tables(schema, services.store_names)
        orchestrator = Orchestrator(config, services, schema)
        orchestrator.start()
        try:
            orchestrator.run()
        except BaseException:
            orchestrator.kill_all()
            raise
        name = app_name(schema.database)
        query = "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
        wait_until(lambda: connection.query(query, args=(name,)).fetchone()[0] == 0, 60, "the workers' sessions ending")
        downloads = workdir / "downloads"
        verified, lost = verify_rows(schema, tables, services.store_names, config.big_every, downloads)
        orchestrator.collect_all(resume_window=0)  # the window ends: interrupted writes no one took over are reclaimed
        orchestrator.counts["final_collections"] += 1
        left = leftovers(schema, services.stores, read_records(workdir, "deleted"))
        verified_after, lost_after = verify_rows(schema, tables, services.store_names, config.big_every, downloads)
        lost += [f"after the final collection: {entry}" for entry in lost_after if entry not in lost]
        result = SoakResult(
            stats=orchestrator.stats(),
            rows_verified=min(verified, verified_after),
            lost=read_records(workdir, "lost") + lost,
            leftovers=left,
            errors=orchestrator.errors + read_records(workdir, "errors"),
            seconds=time.monotonic() - started,
        )
        if result.ok:
            schema.drop(prompt=False)
        return result
    finally:
        dj.config.stores = saved_stores
        connection.close()
