"""An audit hook that logs which files a pipeline stage opens and which folders it lists.

For tests/test_stage_reads.py, which puts this folder on PYTHONPATH. It does nothing unless
DLRIG_AUDIT_LOG names a folder. Then a stage process (``python stages/<name>.py ...``) and every process
it starts (they inherit DLRIG_AUDIT_STAGE) append JSON lines to ``<DLRIG_AUDIT_LOG>/<pid>.jsonl``: first
``{"argv": ..., "cwd": ...}`` of the stage command, then, in order, for every path under DLRIG_AUDIT_ROOT:
``{"open": path, "import": bool}`` for a file opened for reading (``import``: by the import system,
loading a module), ``{"write": path}`` for one opened for writing and ``{"list": path}`` for a folder
listed. Other Python processes (dvc itself) log nothing.
"""

from __future__ import annotations

import json
import os
import sys


def _install() -> None:
    folder, root = os.environ.get("DLRIG_AUDIT_LOG"), os.environ.get("DLRIG_AUDIT_ROOT")
    if not folder or not root:
        return
    stage = os.environ.get("DLRIG_AUDIT_STAGE")
    if stage is None:
        argv = list(getattr(sys, "orig_argv", sys.argv))
        script = next((a for a in argv[1:] if not a.startswith("-")), "")
        if not (script.endswith(".py") and "stages" in script.replace("\\", "/").split("/")):
            return  # not a stage: dvc, git hooks, pip ...
        stage = json.dumps({"argv": argv, "cwd": os.getcwd()})
        os.environ["DLRIG_AUDIT_STAGE"] = stage  # worker processes log under the same stage
    roots = tuple({os.path.abspath(root) + os.sep, os.path.realpath(root) + os.sep})
    log = open(os.path.join(folder, f"{os.getpid()}.jsonl"), "a", buffering=1, encoding="utf-8")
    log.write(stage + "\n")
    busy = False

    def record(kind: str, path: object, importing: bool = False) -> None:
        nonlocal busy
        if busy or path is None or isinstance(path, int):
            return
        busy = True
        try:
            full = os.path.abspath(os.fsdecode(path))
            if full.startswith(roots):
                entry = {kind: full, "import": importing} if kind == "open" else {kind: full}
                log.write(json.dumps(entry) + "\n")
        except Exception:  # never break the stage (a lost line can hide a read, never invent one)
            pass
        finally:
            busy = False

    def hook(event: str, args: tuple) -> None:
        try:
            observe(event, args)
        except Exception:  # an exception in an audit hook would fail the open itself
            pass

    def observe(event: str, args: tuple) -> None:
        if event == "open":
            path, mode, flags = args
            if mode is None:  # os.open: flags say whether it reads
                if isinstance(path, int) or not os.path.isfile(os.fsdecode(path)):
                    return  # a folder (shutil.rmtree opens each one, by a name relative to a dir_fd)
                mode = "r" if (flags & os.O_ACCMODE) == os.O_RDONLY else "w"
            if any(c in mode for c in "wax+"):
                record("write", path)
                return
            # The frame that called open(): the import system's loader when a module is loaded (none
            # when the interpreter opens the script it runs).
            try:
                caller = sys._getframe(2).f_code.co_filename  # 0: observe, 1: hook
            except ValueError:
                caller = ""
            record("open", path, caller.startswith("<frozen importlib"))
        elif event in ("os.listdir", "os.scandir"):
            record("list", args[0] if args and args[0] is not None else ".")
        elif event == "glob.glob":
            record("list", os.path.dirname(args[0]) or ".")

    sys.addaudithook(hook)


_install()
