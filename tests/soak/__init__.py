"""A randomized soak of staged inserts and collections: no committed row ever loses its data.

Writers (every codec, single rows and batches, with exceptions, interrupts, kills and pauses at protocol
steps, and connections cut while a commit waits on a row lock), deleters and looping ``grace=0``
collectors run as separate processes, each with its own database session, against a local store and
object stores (S3 on moto, GCS on fake-gcs-server, Azure on Azurite: ``--stores``) for a fixed number of
writer operations. The parent (the orchestrator) restarts killed writers, runs a collection while a writer
is stopped and then resumes it, and kills a random writer now and then. Now and then a writer stages a resumable
field (``resume=True``) that is cut off mid-write; a later operation of any writer takes it over from its durable
prefix, while collectors keep such writes for a resume window (a tenth of their collections for none). At the
end every committed row must fetch exactly the content its key determines, and after a final collection
nothing unreferenced may be left in any store: no file outside a row's objects, nothing in ``_staging/``, no
lease, no incomplete upload.

    PYTHONPATH=tests python -m soak --ops 2000 --stores local,s3,gcs,azure --writers 3 --seed 1

Run so it starts its own PostgreSQL and emulators (:mod:`soak.__main__`); :func:`soak.orchestrator.run_soak`
takes them from the caller (``tests/soak/test_soak.py`` runs a short version inside ``make test``). The exit
status is 0 only if no row was lost, nothing was left and no process met an unexpected error.

One module per party, each process importing only what it runs (they are spawned, and import it by name):

- :mod:`soak.config`: what a soak runs (:class:`~soak.config.SoakConfig`), where (``Services``), what it found;
- :mod:`soak.content`: every field's content, a function of its name and the row's key, and the tables;
- :mod:`soak.shared`: the lock-free counters the processes share, their connections and logs;
- :mod:`soak.writers`: the writers, their operations and the faults they inject in their own blocks;
- :mod:`soak.resumes`: the writers' resumable blocks, cut off and taken over;
- :mod:`soak.deleters`: the deleters, which check every row before they delete it;
- :mod:`soak.collectors`: the looping collectors;
- :mod:`soak.checker`: every row against its key, and what no row references;
- :mod:`soak.orchestrator`: starts, restarts, pauses and kills the processes, then has the checker judge;
- :mod:`soak.services`: the database, the emulators and the stores' configuration of a soak run alone.
"""
