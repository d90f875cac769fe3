"""Test-only infrastructure: a PostgreSQL wire proxy that loses replies, and a child process that stops itself."""
