"""The ``process`` provider, the embedded default: each job is a detached local process on this machine."""
