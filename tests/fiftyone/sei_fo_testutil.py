"""Generated image datasets for the FiftyOne adapter tests (fiftyone imported lazily)."""

import os
import uuid

import numpy as np

CLASSES = ("red", "green", "blue")
_COLORS = np.array([[220, 40, 40], [40, 200, 60], [50, 60, 220]], dtype=np.float64)


def make_images(folder, n, *, seed=0, flip_rate=0.15, size=32):
    """n small JPEGs of three colour classes; returns (paths, true, given, flipped)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    true = np.arange(n) % len(CLASSES)
    paths = []
    for i in range(n):
        base = _COLORS[true[i]] + rng.normal(0, 25, size=(size, size, 3))
        img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
        p = os.path.join(folder, f"{i:04d}.jpg")
        img.save(p, quality=90)
        paths.append(p)
    flipped = rng.random(n) < flip_rate
    given = true.copy()
    given[flipped] = (true[flipped] + rng.integers(1, len(CLASSES), flipped.sum())) % len(CLASSES)
    return paths, true, given, flipped


def build_dataset(folder, n=90, *, seed=0, with_embeddings=True, name=None):
    """A FiftyOne dataset of generated images with noisy ``ground_truth`` and ``clean``."""
    import fiftyone as fo

    paths, true, given, flipped = make_images(folder, n, seed=seed)
    rng = np.random.default_rng(seed + 1)
    dataset = fo.Dataset(name or f"sei-test-{uuid.uuid4().hex[:8]}")
    samples = []
    for i, p in enumerate(paths):
        s = fo.Sample(filepath=p)
        s["ground_truth"] = fo.Classification(label=CLASSES[given[i]])
        s["clean"] = fo.Classification(label=CLASSES[true[i]])
        if with_embeddings:
            s["embedding"] = (np.eye(len(CLASSES))[true[i]] * 3 + rng.normal(0, 0.5, 8)[:3]).tolist() + rng.normal(0, 1, 5).tolist()
        samples.append(s)
    dataset.add_samples(samples)
    dataset.info["flipped_ids"] = [dataset.values("id")[i] for i in np.flatnonzero(flipped)]
    dataset.save()
    return dataset


#: What a first compute_sei imports (measured: about 4 CPU seconds; torch.optim's first optimizer
#: imports torch._dynamo), imported once by the server that forks :class:`ScriptProcess`.
PRELOAD = ["fiftyone", "fiftyone.core.odm", "sei_fiftyone", "sei_fiftyone.core", "sei_fiftyone.review",
           "sei.engine.training", "torch._dynamo", "sklearn.decomposition", "sklearn.neighbors", "sei_fo_testutil"]


class ScriptProcess:
    """``python -c script *args`` as a separate process, forked from a server process that has
    imported fiftyone and sei_fiftyone once (a fresh interpreter spends about 4 CPU seconds on
    those imports; these tests start dozens of writers). ``env`` replaces the child's environment
    (default: this process's now). Its output goes to a file: :meth:`output`."""

    _context = None

    def __init__(self, script, args=(), env=None):
        import multiprocessing
        import tempfile

        if ScriptProcess._context is None:
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(PRELOAD)
            ScriptProcess._context = ctx
        fd, self._log = tempfile.mkstemp(prefix="sei-script-", suffix=".log")
        os.close(fd)
        argv = ["-c", *map(str, args)]
        self._proc = ScriptProcess._context.Process(
            target=_run_script, args=(script, argv, dict(os.environ if env is None else env), self._log))
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

    def output(self):
        with open(self._log) as f:
            return f.read()

    def communicate(self, timeout=None):
        self.wait(timeout)
        return self.output(), None

    def __del__(self):
        try:
            os.unlink(self._log)
        except OSError:
            pass


def _run_script(script, argv, env, log):
    """In the forked child: the caller's environment and argv, output to ``log``, run ``script``
    as ``__main__``; an exception exits 1 with its traceback in the log, like ``python -c``."""
    import sys
    import traceback

    os.environ.clear()
    os.environ.update(env)
    out = open(log, "w", buffering=1)
    os.dup2(out.fileno(), 1)
    os.dup2(out.fileno(), 2)
    sys.stdout = sys.stderr = out
    sys.argv = list(argv)
    try:
        exec(compile(script, "<script>", "exec"), {"__name__": "__main__"})
    except SystemExit as e:
        out.flush()
        os._exit(e.code if isinstance(e.code, int) else (0 if e.code is None else 1))
    except BaseException:
        traceback.print_exc()
        out.flush()
        os._exit(1)
    out.flush()
    os._exit(0)


def kill_at_flag(script, args, flag, timeout=120):
    """Run ``script`` with ``args`` (:class:`ScriptProcess`) until it creates the file ``flag``
    (its kill point), then SIGKILL it."""
    import signal
    import time
    from pathlib import Path

    proc = ScriptProcess(script, args)
    try:
        deadline = time.time() + timeout
        while not Path(flag).exists():
            assert proc.poll() is None, proc.output()
            assert time.time() < deadline, "the kill point was not reached"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
