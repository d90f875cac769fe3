"""What one soak runs, where it runs, and what it found."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

TABLES = ("Alpha", "Beta")
CODECS = ("obj", "npy", "hash", "blob", "attach", "zarr", "fp")
DECLARED = {
    "obj": "object",
    "npy": "npy",
    "hash": "hash",
    "blob": "blob",
    "attach": "attach",
    "zarr": "zarr",
    "fp": "filepath",
    "robj": "object",
    "rhash": "hash",
    "rblob": "blob",
    "rdir": "object",
}
# fields written only by resumable blocks (soak.resumes), at keys of their own: a file, hash-addressed bytes, an array
# through open_blob_array, and a Zarr directory through store(); each a few durable units long
RESUMABLE_CODECS = ("robj", "rhash", "rblob", "rdir")
PLACED = "acq"  # <filepath@> values are placed under acq/{schema}/{table}/ at paths their key determines
SHARED_CONTENTS = 7  # hash-addressed content depends on k % 7: the same bytes recur across keys (dedup races)
BIG_SIZE = 17 << 20  # above dj-staged's 16 MiB: framing a <blob@> on S3 is then a multipart upload

# what the processes count (each in its own row of the shared table, which only it writes)
STATS = (
    "ops",
    "single_ops",
    "batch_ops",
    "rows_tried",
    "rows_committed",
    "refused",
    "paths_taken",
    "placed",
    "conflicts",
    "exceptions",
    "interrupts",
    "step_kills",
    "write_kills",
    "multipart_kills",
    "after_commit_kills",
    "commit_cuts",
    "pauses",
    "dedups",
    "deletes",
    "verified_before_delete",
    "collections",
    "collections_default_grace",
    "collected",
    "collections_reclaiming",
    "reclaims_begun",
    "resume_ops",
    "resume_takeovers",
    "resumed",
    "resumed_committed",
    "resume_restarts",
    "resume_fresh",
    "resume_taken",
    "resume_kills",
    "unexpected",
)
STAT = {name: index for index, name in enumerate(STATS)}


@dataclass(frozen=True)
class SoakConfig:
    """What one soak runs: the operation budget, stores, processes, seed and fault rates."""

    ops: int = 2000
    stores: tuple[str, ...] = ("local", "s3")
    writers: int = 3
    deleters: int = 1
    collectors: int = 2
    seed: int = 1
    keys: int = 0  # primary keys 0..keys-1 per table; 0: ops // 4, at least 24
    batch_share: float = 0.35
    # exception, interrupt, kill, stop, and cut: the commit waits on a row lock another session holds, and its
    # connection is cut on the writer's side; the other session then rolls back, at once or a little later
    fault_rates: tuple[float, ...] = (0.07, 0.05, 0.07, 0.06, 0.05)
    kill_every: int = 40  # the orchestrator kills a random writer about every this many operations (0: never)
    delete_share: float = 1.0  # deletes per writer operation
    big_every: int = 50  # every big_every-th key holds a 17 MiB <blob@s3> (0: none)
    resume_share: float = 0.05  # operations that are resumable blocks (thrice that while an interrupted one waits)
    resume_keys: int = 0  # keys key_space.. of resumable rows per table; 0: ops // 40, at least 6
    # a collector keeps an interrupted resumable write this long (DJ_STAGED_RESUME_WINDOW); a reclaim_share of its
    # collections use a window of 0, so some resumes find their prefix collected and start over
    resume_window: float = 300.0
    reclaim_share: float = 0.1
    timeout: float = 3600.0

    @property
    def key_space(self) -> int:
        return self.keys or max(24, self.ops // 4)

    @property
    def resume_key_space(self) -> int:
        return self.resume_keys or max(6, self.ops // 40)

    def quota(self, slot: int) -> int:
        """The operations writer ``slot`` performs: the budget split evenly, so the total is exact."""
        return self.ops // self.writers + (1 if slot < self.ops % self.writers else 0)


@dataclass(frozen=True)
class Services:
    """Where the soak runs: the database, the stores' configuration (``dj.config.stores``), a work folder."""

    db: dict[str, Any]
    stores: dict[str, Any]
    workdir: str

    @property
    def store_names(self) -> list[str]:
        return [name for name in self.stores if name != "default"]


@dataclass
class SoakResult:
    """Counts of a finished soak and everything it found wrong."""

    stats: dict[str, int]
    rows_verified: int = 0
    lost: list[str] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not (self.lost or self.leftovers or self.errors)

    def summary(self, config: SoakConfig) -> str:
        """The figures, one aspect per line."""
        s = self.stats
        kills = s["step_kills"] + s["write_kills"] + s["multipart_kills"] + s["after_commit_kills"] + s["resume_kills"]
        return "\n".join(
            [
                f"soak: {s['ops']} operations ({s['single_ops']} single, {s['batch_ops']} batch) by "
                f"{config.writers} writers on {','.join(config.stores)}, seed {config.seed}, {self.seconds:.0f} s",
                f"  rows: {s['rows_tried']} tried, {s['rows_committed']} committed, {s['refused']} refused as "
                f"duplicates, {s['paths_taken']} refused a path another writer held, {s['conflicts']} in a database "
                f"conflict; {s['deletes']} deleted; {s['placed']} <filepath@> values placed",
                f"  faults: {s['exceptions']} exceptions, {s['interrupts']} KeyboardInterrupts, {kills} self-kills "
                f"({s['step_kills']} at a protocol step, {s['write_kills']} mid-write, {s['multipart_kills']} in a "
                f"multipart upload, {s['after_commit_kills']} after the commit, {s['resume_kills']} in a resumable "
                f"block), {s['orchestrator_kills']} kills by "
                f"the orchestrator, {s['restarts']} restarts, {s['pauses']} pauses, {s['commit_cuts']} connections "
                "cut while their commit waited on a row lock",
                f"  resumable: {s['resume_ops']} blocks with resume=True ({s['resume_takeovers']} took a remembered "
                f"key over), {s['resume_kills']} killed by themselves; {s['resumed']} resumed from a durable prefix "
                f"({s['resumed_committed']} of them committed), {s['resume_restarts']} restarted with a "
                f"ResumeRestartedWarning, {s['resume_fresh']} took a key over from byte 0 (nothing durable, or "
                f"collected), {s['resume_taken']} refused with ResumeKeyTakenError",
                f"  dedups: {s['dedups']}",
                f"  collections: {s['collections'] + s['pause_collections'] + s['final_collections']} "
                f"({s['collections']} looping, {s['collections_default_grace']} of them with the default grace, "
                f"{s['collections_reclaiming']} with a resume window of 0; "
                f"{s['pause_collections']} while a writer was stopped; {s['final_collections']} final), "
                f"{s['collected']} objects collected",
                f"  verified: {self.rows_verified} rows at the end and {s['verified_before_delete']} before their "
                f"deletion, {len(self.lost)} lost; {len(self.leftovers)} unreferenced objects left; "
                f"{len(self.errors)} unexpected errors",
            ]
        )
