"""Test-only infrastructure, imported as ``support.<module>`` by the tests and by their child processes.

- ``paths``: where the suite's files are, and the ``PYTHONPATH`` of a child process;
- ``tables``: tables declared in a test's schema, a staged insert that does one thing;
- ``stores``: what is in a store, and what a client sent to and received from its service;
- ``races``: the parties of a race in threads, one held at a protocol step;
- ``database``: what the server shows of the parties (sessions, locks held and waited for);
- ``leases``: another writer's lease, written as that writer would;
- ``faults``: the ``faulty`` storage protocol (a filesystem that fails on command), a test-only entry point;
- ``workers``: what child processes run, importable by name (spawned processes, Dask workers);
- ``child``: a child process that stops itself (real SIGSTOP) at named points;
- ``pgproxy``: a PostgreSQL wire proxy that cuts connections or loses replies;
- ``tcpcount``: a TCP proxy that counts the bytes each way;
- ``s3``: a boto3 client for a store's S3 endpoint;
- ``pytest_runs``: pytest run in a child process, as a codec author runs it.
"""
