"""The security suite: a hostile deployment author (full control of job variables and flow-run parameters) tries to
cross the trust boundaries of docs/security.md on every provider; each attempt must be refused with a clear reason and
change nothing."""
