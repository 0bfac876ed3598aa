"""Run several ``streamlit.testing.v1.AppTest`` sessions at once, in threads of one process, as concurrent users
of one server: the page code, ``st.cache_resource`` / ``st.cache_data`` and module state are shared, each
AppTest keeps its own session state.

``AppTest.run`` is not made for that: every run installs a fresh mock ``Runtime`` as the process-wide singleton
(``Runtime._instance``) and sets it back to None when it ends, so a session finishing its run would pull the
runtime from under a session still running (``Runtime hasn't been created!``). ``concurrent_apptests()`` makes
``Runtime.instance()`` answer, in each thread, the mock runtime of the run that thread belongs to (the caller's
thread and the script thread it starts), keeps the process-wide "the app has a pages/ folder" flag from being
reset by every run, compiles each page once for all sessions (as a server does) and keeps ``global.appTest`` on
for the whole time. Used by
``tests/test_page_segmentation_concurrent.py`` and ``benchmarks/load_test.py --client apptest``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

_local = threading.local()


def current_runtime() -> Any:
    """The mock runtime of the last AppTest run made in this thread (None before any)."""
    return getattr(_local, "runtime", None)


@contextmanager
def concurrent_apptests() -> Iterator[None]:
    """Patch Streamlit's testing runtime so that AppTest instances can run at the same time in threads."""
    from streamlit import config as st_config
    from streamlit.runtime.runtime import Runtime
    from streamlit.testing.v1 import app_test, local_script_runner

    real_magic = app_test.MagicMock

    def recording_mock(*args: Any, **kwargs: Any) -> Any:
        made = real_magic(*args, **kwargs)
        if kwargs.get("spec") is Runtime:  # the run's mock runtime: this thread's from now on
            _local.runtime = made
        return made

    class _KeepPagesFlag(type):
        """Each run resets the process-wide ``PagesManager.uses_pages_directory`` to None before it sets it again:
        a session running meanwhile would look its page links up as if the app had no pages/ folder."""

        def __setattr__(cls, name: str, value: Any) -> None:
            if name == "uses_pages_directory" and value is None:
                return
            super().__setattr__(name, value)

    class PagesManager(app_test.PagesManager, metaclass=_KeepPagesFlag):
        pass

    shared_scripts = app_test.ScriptCache()  # one per process, as a server has: each page compiled once (and
    # never in two threads at once: CPython 3.11's AST builder is not thread-safe, "AST constructor recursion
    # depth mismatch")

    runner_cls = local_script_runner.LocalScriptRunner
    real_init = runner_cls.__init__
    real_thread = runner_cls._run_script_thread

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        real_init(self, *args, **kwargs)
        self._load_runtime = current_runtime()  # made just before, in the caller's thread

    def script_thread(self: Any) -> None:
        _local.runtime = getattr(self, "_load_runtime", None)
        real_thread(self)

    real_instance = Runtime.__dict__["instance"]
    real_exists = Runtime.__dict__["exists"]

    def instance(cls: Any) -> Any:
        rt = current_runtime()
        return rt if rt is not None else real_instance.__func__(cls)

    def exists(cls: Any) -> bool:
        return current_runtime() is not None or real_exists.__func__(cls)

    old_app_test = st_config.get_option("global.appTest")
    st_config.set_option("global.appTest", True)
    try:
        with mock.patch.object(app_test, "MagicMock", recording_mock), \
                mock.patch.object(app_test, "PagesManager", PagesManager), \
                mock.patch.object(app_test, "ScriptCache", lambda: shared_scripts), \
                mock.patch.object(local_script_runner, "ScriptCache", lambda: shared_scripts), \
                mock.patch.object(runner_cls, "__init__", init), \
                mock.patch.object(runner_cls, "_run_script_thread", script_thread), \
                mock.patch.object(Runtime, "instance", classmethod(instance)), \
                mock.patch.object(Runtime, "exists", classmethod(exists)):
            yield
    finally:
        st_config.set_option("global.appTest", old_app_test)
        _local.__dict__.clear()
