"""Child processes for the tests without a fresh interpreter's imports.

A fresh ``python`` spends about 4 CPU seconds importing torch (with ``torch._dynamo``, which the
first optimizer pulls in), fiftyone and scikit-learn before it does anything; the tests start
dozens of children (writers, killed runs, command lines). :class:`ScriptProcess` forks them from
one multiprocessing *forkserver* that has imported :data:`PRELOAD` once, then runs the child's
code as ``__main__`` with the caller's environment and argv, its stdout and stderr in files.

What stays a real interpreter: tests of what a fresh interpreter imports, of ``torchrun``, of
the GPU machine's bare site and of FiftyOne's database notice (they spawn with ``subprocess``).
"""

import os
import signal
import tempfile
import time

# Imported once in the forkserver (a module that is not installed is skipped by multiprocessing).
# fiftyone reads its database URI at import: the FiftyOne conftest sets it at collection, before
# the first child of a test run starts the server.
# (not sei.__main__: runpy would warn that the module it runs as __main__ was imported before.)
PRELOAD = ["torch", "torch._dynamo", "sklearn.decomposition", "sklearn.neighbors", "sei", "sei.engine.training",
           "fiftyone", "fiftyone.core.odm", "sei_fiftyone", "sei_fiftyone.core", "sei_fiftyone.review", "forked"]

_context = None


def _forkserver():
    global _context
    if _context is None:
        import multiprocessing

        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(PRELOAD)
        _context = ctx
    return _context


class ScriptProcess:
    """``python -c script *args`` (``python -m module *args`` with ``module=``, ``python path *args``
    with ``path=``) as a separate process forked from the preloaded server. ``env`` replaces the
    child's environment (default: this process's now); ``cwd`` is its working folder. Read
    :meth:`stdout`, :meth:`stderr` or both (:meth:`output`) once it has ended."""

    def __init__(self, script=None, args=(), env=None, *, module=None, path=None, cwd=None):
        if sum(x is not None for x in (script, module, path)) != 1:
            raise TypeError("ScriptProcess takes one of a script, module= or path=")
        self._files = []
        for name in ("out", "err"):
            fd, log = tempfile.mkstemp(prefix=f"sei-child-{name}-", suffix=".log")
            os.close(fd)
            self._files.append(log)
        argv = [str(path) if path else ("-m" if module else "-c"), *map(str, args)]
        env = dict(os.environ if env is None else env)
        self._proc = _forkserver().Process(target=_child, args=(script, module, path, argv, env, cwd, *self._files))
        self._proc.start()
        self.pid = self._proc.pid

    @property
    def returncode(self):
        return self._proc.exitcode

    def poll(self):
        return self._proc.exitcode

    def wait(self, timeout=None):
        self._proc.join(timeout)
        if self._proc.exitcode is None:
            raise TimeoutError(f"process {self.pid} still running after {timeout} s")
        return self._proc.exitcode

    def send_signal(self, sig):
        os.kill(self.pid, sig)

    def kill(self):
        self._proc.kill()

    def _read(self, i):
        with open(self._files[i]) as f:
            return f.read()

    def stdout(self):
        return self._read(0)

    def stderr(self):
        return self._read(1)

    def output(self):
        return self.stdout() + self.stderr()

    def communicate(self, timeout=None):
        """Wait up to ``timeout`` seconds (killing the child past it); ``(stdout, stderr)``."""
        try:
            self.wait(timeout)
        except TimeoutError:
            self.kill()
            self.wait()
            raise
        return self.stdout(), self.stderr()

    def __del__(self):
        for path in getattr(self, "_files", ()):
            try:
                os.unlink(path)
            except OSError:
                pass


class Completed:
    """What :func:`run` returns: like ``subprocess.CompletedProcess`` with text output."""

    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def run(script=None, args=(), env=None, *, module=None, path=None, cwd=None, timeout=300):
    """:class:`ScriptProcess` run to its end, like ``subprocess.run(..., capture_output=True, text=True)``."""
    proc = ScriptProcess(script, args, env, module=module, path=path, cwd=cwd)
    out, err = proc.communicate(timeout)
    return Completed(proc.returncode, out, err)


def _child(script, module, path, argv, env, cwd, out_path, err_path):
    """In the forked child: the caller's environment, argv and folder, stdout and stderr to their
    files, then ``script``, ``module`` or the file ``path`` as ``__main__`` (its folder first on
    ``sys.path``, as ``python path`` has it); an uncaught exception exits 1 with its
    traceback on stderr and SystemExit with its code, as the interpreter does."""
    import multiprocessing
    import runpy
    import sys
    import traceback

    # a forkserver child has the forkserver as its start method; a fresh interpreter has the
    # platform's default (fork on Linux), which libraries such as cleanlab's Pool rely on
    multiprocessing.set_start_method(None, force=True)
    os.environ.clear()
    os.environ.update(env)
    if cwd is not None:
        os.chdir(cwd)
    out, err = open(out_path, "w", buffering=1), open(err_path, "w", buffering=1)
    os.dup2(out.fileno(), 1)
    os.dup2(err.fileno(), 2)
    sys.stdout, sys.stderr = out, err
    sys.argv = list(argv)
    code = 0
    try:
        if module is not None:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        elif path is not None:
            sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
            runpy.run_path(str(path), run_name="__main__")
        else:
            exec(compile(script, "<script>", "exec"), {"__name__": "__main__"})
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            code = e.code or 0
        else:
            print(e.code, file=sys.stderr)
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    out.flush()
    err.flush()
    os._exit(code)


def start_until_flag(script, args, flag, timeout=120):
    """:class:`ScriptProcess` of ``script`` with ``args``, returned once it has created the file
    ``flag`` (still running); an AssertionError (the child's output) if it ends or times out first."""
    from pathlib import Path

    proc = ScriptProcess(script, args)
    try:
        deadline = time.time() + timeout
        while not Path(flag).exists():
            assert proc.poll() is None, proc.output()
            assert time.time() < deadline, f"{flag} was not created within {timeout} s"
            time.sleep(0.05)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc


def kill_at_flag(script, args, flag, timeout=120):
    """Run ``script`` with ``args`` (:class:`ScriptProcess`) until it creates the file ``flag``
    (its kill point), then SIGKILL it."""
    proc = start_until_flag(script, args, flag, timeout)
    try:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
