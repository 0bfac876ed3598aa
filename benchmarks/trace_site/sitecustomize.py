"""Loaded by the app server that ``bench_segment_click.py --trace`` starts (through ``PYTHONPATH``): appends one
line per script run to ``$BENCH_TRACE_FILE`` (wall-clock start and end in seconds since the epoch, whole page or
fragment), and, with ``$BENCH_PROFILE_DIR``, saves each run's cProfile statistics there. Nothing else changes."""

from __future__ import annotations

import os

if os.environ.get("BENCH_TRACE_FILE"):
    import cProfile
    import itertools
    import time

    from streamlit.runtime.scriptrunner import script_runner

    _original = script_runner.ScriptRunner._run_script
    _count = itertools.count()

    def _traced(self, rerun_data):  # type: ignore[no-untyped-def]
        n = next(_count)
        started = time.time()
        profile = cProfile.Profile() if os.environ.get("BENCH_PROFILE_DIR") else None
        if profile is not None:
            profile.enable()
        try:
            return _original(self, rerun_data)
        finally:
            if profile is not None:
                profile.disable()
                profile.dump_stats(os.path.join(os.environ["BENCH_PROFILE_DIR"], f"run{n:03d}.pstats"))
            kind = "fragment" if getattr(rerun_data, "fragment_id_queue", None) else "page"
            with open(os.environ["BENCH_TRACE_FILE"], "a", encoding="utf-8") as f:
                f.write(f"{n} {started:.3f} {time.time():.3f} {kind}\n")

    script_runner.ScriptRunner._run_script = _traced
