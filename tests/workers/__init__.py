"""Programs that tests run in subprocesses (device setup, crashes, clusters).

Each module is started as `python -m workers.<module> ...` with `tests/` on
`PYTHONPATH` (see `launch.py`) and does nothing when imported.
"""
