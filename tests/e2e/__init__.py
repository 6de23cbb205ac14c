"""Helpers for end-to-end tests of the job service: real redis-server and worker processes."""
