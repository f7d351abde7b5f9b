"""The private mongod of ``sei_fiftyone.db.temporary_mongod``: no leftovers, prompt exit."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc"), reason="the watchdog needs /proc (Linux)")


def _env(tmp_path):
    env = dict(os.environ)
    env.pop("FIFTYONE_DATABASE_URI", None)
    env["TMPDIR"] = str(tmp_path)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["FIFTYONE_DO_NOT_TRACK"] = "true"
    return env


def _mongod_pids(dbpath):
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{d}/cmdline").read_bytes()
            state = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if b"mongod" in cmd and str(dbpath).encode() in cmd and state != "Z":
            pids.append(int(d))
    return pids


def test_mongod_and_its_folder_go_when_the_parent_is_killed_with_sigkill(tmp_path):
    script = textwrap.dedent("""
        import sys, time
        from sei_fiftyone.db import temporary_mongod
        with temporary_mongod() as uri:
            print(uri, flush=True)
            time.sleep(120)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            env=_env(tmp_path))
    try:
        assert proc.stdout.readline().startswith("mongodb://")
        folders = list(tmp_path.glob("sei-mongod-*"))
        assert len(folders) == 1 and _mongod_pids(folders[0])
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        deadline = time.time() + 30
        while (_mongod_pids(folders[0]) or folders[0].exists()) and time.time() < deadline:
            time.sleep(0.2)
        assert not _mongod_pids(folders[0]), "mongod outlived its parent"
        assert not folders[0].exists(), "the temporary data folder was left behind"
    finally:
        proc.kill()
        proc.wait()
        for folder in tmp_path.glob("sei-mongod-*"):
            for pid in _mongod_pids(folder):
                os.kill(pid, signal.SIGKILL)


def test_process_exits_promptly_after_the_block_when_fiftyone_was_used(tmp_path):
    # The demo's --private-db path: FiftyOne's exit hook used to wait 30 s for the stopped server.
    script = textwrap.dedent("""
        import os, time
        from sei_fiftyone.db import temporary_mongod
        with temporary_mongod() as uri:
            os.environ["FIFTYONE_DATABASE_URI"] = uri
            import fiftyone as fo
            fo.Dataset().add_sample(fo.Sample(filepath="/nonexistent/x.jpg"))
        print(time.time(), flush=True)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=_env(tmp_path),
                         timeout=120)
    done = time.time()
    assert out.returncode == 0, out.stderr
    left = float(out.stdout.strip().splitlines()[-1])
    assert done - left < 10, f"the process took {done - left:.0f} s to exit after the block"
    assert not list(tmp_path.glob("sei-mongod-*"))
