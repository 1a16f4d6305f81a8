"""stop_process stops a whole process group: it returns only when no process of the group is left."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from stock_platform.services.process import group_alive, pid_alive, stop_process

# A member that takes its time to leave after SIGTERM (as a run worker finishing its step does) and
# writes its pid where the test can find it.
SLOW_MEMBER = """
import os, signal, sys, time
def leave(*_):
    time.sleep(1.5)
    os._exit(0)
signal.signal(signal.SIGTERM, leave)
open(sys.argv[1], "w").write(str(os.getpid()))
time.sleep(120)
"""


def test_stop_process_waits_for_every_member_of_the_group_not_only_its_leader(tmp_path: Path):
    pid_file = tmp_path / "member.pid"
    # The leader starts the slow member in its group and then leaves at once on SIGTERM. Both start with
    # SIGTERM's default action, unblocked: an ignored or blocked signal is inherited through fork and exec,
    # and an earlier test of the session can leave SIGTERM so in pytest's process (the group then lingers
    # until the SIGKILL: 20 s; reproduced by ignoring or blocking SIGTERM before running this test).
    leader = subprocess.Popen(
        [sys.executable, "-c",
         "import signal, subprocess, sys, time\n"
         "signal.signal(signal.SIGTERM, signal.SIG_DFL)\n"
         "signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})\n"
         f"subprocess.Popen([sys.executable, '-c', {SLOW_MEMBER!r}, {str(pid_file)!r}])\n"
         "time.sleep(120)"],
        start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline, "the group's member did not start"
        time.sleep(0.05)
    member = int(pid_file.read_text())
    assert group_alive(leader.pid)

    started = time.monotonic()
    stop_process(leader.pid, timeout_s=20)
    assert not pid_alive(member), "stop_process returned while a member of the group was still running"
    assert not group_alive(leader.pid)
    assert time.monotonic() - started < 15, "the member left on SIGTERM, not on the later SIGKILL"


def test_a_finished_group_is_not_alive(tmp_path: Path):
    done = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
    done.wait()
    assert not group_alive(done.pid)
    stop_process(done.pid)  # nothing left to stop: returns at once
