"""`isthmus dev` as a subprocess, keyed, with a tiny random model, free ports, a tmp data dir and a tmp working
directory: "up" only once a chat succeeds, keys printed once and kept across restarts, every file under the
data dir, killed children brought back, a hung (SIGSTOP'd) agent killed and brought back, children gone with a
SIGKILLed `isthmus dev`, and a second stack on taken ports never attaching to the first one's store."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from local_runtime.ddb import free_port
from local_runtime.process import owns_port, port_free
from local_runtime.template import load_template, table_logical_ids
from tests.support.waiting import poll

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
# What a developer's shell may carry that would point the stack elsewhere than its own data dir.
_SCRUBBED = ("ISTHMUS_DYNAMODB_ENDPOINT", "ISTHMUS_TABLE_PREFIX", "ISTHMUS_LOCAL_KEY_FILE", "ISTHMUS_MASTER_KEY",
             "ISTHMUS_DEFAULT_AGENT_URL", "ISTHMUS_CONTROL_URL", "ISTHMUS_MODELS_DIR", "ISTHMUS_ADMIN_TOKEN")
# The agent and the edge probed every 0.5 s, 1.5 s each (not 2 s and 3 s): a hang shows in ~6 s instead of ~15 s.
PROBE_TIMEOUT_S = 1.5
PROBES = {"ISTHMUS_DEV_PROBE_SECONDS": "0.5", "ISTHMUS_DEV_PROBE_TIMEOUT_SECONDS": str(PROBE_TIMEOUT_S)}


class DevRun:
    """One `isthmus dev` subprocess whose console lines are collected as they come."""

    def __init__(self, *extra: str, cwd: Path, data_dir: Path, port: int | None = None,
                 ddb_port: int | None = None, agent_port: int | None = None) -> None:
        self.port = port or free_port()
        self.ddb_port = ddb_port or free_port()
        self.agent_port = agent_port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED} | PROBES
        # The worktree's code, whatever is installed, whatever the working directory.
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "layers"), str(ROOT / "shared"),
                                             env.get("PYTHONPATH", "")])
        cmd = [sys.executable, "-m", "local_runtime.cli", "dev", "--port", str(self.port), "--ddb-port",
               str(self.ddb_port), "--agent-port", str(self.agent_port), "--data-dir", str(data_dir), *extra]
        self.proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, start_new_session=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 180) -> re.Match[str]:
        """The first console line matching ``pattern``, waiting for it (a wait, not a timing assertion)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                found = re.search(pattern, line)
                if found:
                    return found
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.1)
        raise AssertionError(f"no line matching {pattern!r}; output so far:\n{self.output}")

    def pid_of(self, name: str) -> int:
        """The latest pid the console gave for a child ("node agent started (pid N)", "... restarted ...")."""
        pids = [int(m.group(1)) for line in self.lines
                if (m := re.match(rf"{re.escape(name)} (?:started|restarted) \(pid (\d+)\)", line))]
        assert pids, f"no pid for {name}:\n{self.output}"
        return pids[-1]

    def exit_code(self, timeout: float = 60) -> int:
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=10)
        return code

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            return self.exit_code(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.exit_code(10)


def chat(base: str, key: str | None, timeout: float = 60) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(f"{base}/v1/chat/completions", headers=headers, timeout=timeout,
                      json={"model": "default", "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]})


def chat_succeeds(base: str, key: str) -> bool:
    try:
        return chat(base, key, timeout=30).status_code == 200
    except httpx.TransportError:
        return False


def gone(pid: int) -> bool:
    """No such process, or only a zombie left (whoever reaps orphans here may take its time)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return {"data": tmp_path_factory.mktemp("dev-data"), "cwd": tmp_path_factory.mktemp("dev-cwd"),
            "other": tmp_path_factory.mktemp("dev-other")}


@pytest.fixture(scope="module")
def stack(tiny_model: Path, dirs: dict[str, Path]) -> Iterator[DevRun]:
    run = DevRun("--keyed", "--model", str(tiny_model), cwd=dirs["cwd"], data_dir=dirs["data"])
    try:
        run.wait_for(r"^Isthmus is up: ", timeout=240)
        yield run
    finally:
        run.stop()


@pytest.fixture(scope="module")
def keys(stack: DevRun) -> dict[str, str]:
    return {"master": stack.wait_for(r"^  master key: (sk-master-\S+)").group(1),
            "api": stack.wait_for(r"^  API key:    (gw-\S+)").group(1),
            "api_id": stack.wait_for(r"\(user 'default', id (\w+);").group(1)}


def test_up_comes_after_the_model_is_servable_and_the_keys_are_printed_once(stack: DevRun, keys: dict[str, str],
                                                                           dirs: dict[str, Path]) -> None:
    # given the console of a first keyed start, read up to "Isthmus is up"
    up = next(i for i, line in enumerate(stack.lines) if line.startswith("Isthmus is up"))
    # then the agent was ready before "up", and each secret was printed exactly once
    assert any(line.startswith("node agent ready") for line in stack.lines[:up])
    assert stack.output.count(keys["master"]) == 1 and stack.output.count(keys["api"]) == 1
    # when a chat is sent right after "up", with the printed API key and without a key
    answer = chat(stack.base, keys["api"])
    keyless = chat(stack.base, None)
    # then the keyed chat is answered by the model, and the keyless one is refused: the edge runs keyed
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["finish_reason"] == "length"
    assert keyless.status_code == 401 and keyless.json()["error"]["message"] == "Missing API key"
    # and the copy of the keys is the user's alone, under the data dir
    kept = json.loads((dirs["data"] / "keys.json").read_text())
    assert (kept["master_key"], kept["api_key"]) == (keys["master"], keys["api"])
    assert stat.S_IMODE((dirs["data"] / "keys.json").stat().st_mode) == 0o600


def test_every_file_lands_under_the_data_dir(stack: DevRun, keys: dict[str, str], dirs: dict[str, Path]) -> None:
    # when a cloud provider's api key is stored (sealed with the local provider key file)
    put = httpx.put(f"{stack.base}/admin/providers/devtest", timeout=30,
                    headers={"Authorization": f"Bearer {keys['master']}"},
                    json={"template": "openai", "api_key": "sk-dev-test-0123456789"})
    assert put.status_code == 200, put.text
    # then the provider key file is in the data dir, owner-only, and the working directory stays empty
    key_file = dirs["data"] / "provider.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert list(dirs["cwd"].iterdir()) == []
    # and the data, the logs and the lock are there too
    assert {"dynamodb", "logs", "dev.lock", "keys.json", "provider.key"} <= {p.name for p in dirs["data"].iterdir()}
    assert {"dynamodb.log", "agent.log", "edge.log"} <= {p.name for p in (dirs["data"] / "logs").iterdir()}


@pytest.mark.parametrize("child", ["node agent", "edge"])
def test_a_killed_agent_or_edge_is_restarted_and_serves_again(stack: DevRun, keys: dict[str, str],
                                                              child: str) -> None:
    # given the child's current pid
    pid = stack.pid_of(child)
    # when it is killed outright
    os.kill(pid, signal.SIGKILL)
    # then the console says it died and came back under a new pid, and a chat succeeds again
    stack.wait_for(rf"^{child} was killed by SIGKILL after \d+ s; restarting in")
    back = int(stack.wait_for(rf"^{child} is back \(pid (\d+)\)", timeout=120).group(1))
    assert back != pid
    poll(lambda: chat_succeeds(stack.base, keys["api"]), timeout=60, interval=0.5)


def test_a_killed_dynamodb_local_comes_back_on_its_port_with_its_data(stack: DevRun, keys: dict[str, str]) -> None:
    # given DynamoDB Local's JVM
    pid = stack.pid_of("DynamoDB Local")
    # when it is killed outright
    os.kill(pid, signal.SIGKILL)
    # then it is restarted on the same port (the new JVM is the one listening there)
    stack.wait_for(r"^DynamoDB Local was killed by SIGKILL")
    back = int(stack.wait_for(r"^DynamoDB Local is back \(pid (\d+)\)", timeout=120).group(1))
    assert back != pid and owns_port(back, stack.ddb_port) is True
    # and the same data: the first-use key is still listed, and a chat with it succeeds
    master = {"Authorization": f"Bearer {keys['master']}"}

    def listed() -> bool:
        answer = httpx.get(f"{stack.base}/v1/keys", headers=master, timeout=30)
        return answer.status_code == 200 and keys["api_id"] in {k["id"] for k in answer.json()}

    poll(listed, timeout=60, interval=0.5)
    poll(lambda: chat_succeeds(stack.base, keys["api"]), timeout=60, interval=0.5)


def test_a_hung_agent_is_killed_and_restarted_and_serves_again(stack: DevRun, keys: dict[str, str]) -> None:
    # given the agent's current pid
    pid = stack.pid_of("node agent")
    try:
        # when it hangs without exiting
        os.kill(pid, signal.SIGSTOP)
        # then the console says it stopped answering its /health and that it is killed, then restarted
        stack.wait_for(rf"^node agent \(pid {pid}\) did not answer http://127.0.0.1:{stack.agent_port}/health "
                       rf"3 times in a row \({PROBE_TIMEOUT_S:g} s each\): killing it \(SIGKILL\)", timeout=60)
        stack.wait_for(r"^node agent hung after \d+ s; restarting in", timeout=30)
        poll(lambda: stack.pid_of("node agent") != pid, timeout=30)
        stack.wait_for(rf"^node agent is back \(pid {stack.pid_of('node agent')}\)", timeout=120)
        assert gone(pid)
        # and a chat succeeds again
        poll(lambda: chat_succeeds(stack.base, keys["api"]), timeout=60, interval=0.5)
    finally:
        if not gone(pid):
            os.kill(pid, signal.SIGCONT)


def test_a_second_stack_moves_off_taken_internal_ports_and_never_uses_the_first_store(
        stack: DevRun, dirs: dict[str, Path]) -> None:
    # when a second stack asks for the first one's DynamoDB and agent ports (its own edge port and data dir)
    second = DevRun("--no-agent", cwd=dirs["cwd"], data_dir=dirs["other"], ddb_port=stack.ddb_port,
                    agent_port=stack.agent_port)
    try:
        # then it says it moved DynamoDB Local, and creates every table in its own fresh store
        moved = int(second.wait_for(rf"^port {stack.ddb_port} is taken: DynamoDB Local uses port (\d+)").group(1))
        created = second.wait_for(rf"^DynamoDB Local on http://127.0.0.1:{moved} \(pid \d+; (\d+) tables created")
        assert int(created.group(1)) == len(table_logical_ids(load_template())) > 0
    finally:
        assert second.stop() == 0
    assert "0 tables created" not in second.output


def test_a_taken_edge_port_or_a_data_dir_in_use_is_refused(stack: DevRun, dirs: dict[str, Path]) -> None:
    # when a stack asks for the first one's edge port
    same_port = DevRun("--no-agent", cwd=dirs["cwd"], data_dir=dirs["other"], port=stack.port)
    # then it refuses with the reason, starting nothing
    assert same_port.exit_code() == 2
    assert f"port {stack.port} on 127.0.0.1 is taken" in same_port.output
    assert "DynamoDB Local" not in same_port.output
    # when a stack asks for the first one's data dir
    same_dir = DevRun("--no-agent", cwd=dirs["cwd"], data_dir=dirs["data"])
    assert same_dir.exit_code() == 2
    assert f"is in use by another `isthmus dev` (pid {stack.proc.pid})" in same_dir.output


def test_ctrl_c_stops_every_child_and_a_restart_keeps_the_same_keys(stack: DevRun, keys: dict[str, str],
                                                                   tiny_model: Path, dirs: dict[str, Path]) -> None:
    # given the children's pids
    pids = [stack.pid_of(name) for name in ("DynamoDB Local", "node agent", "edge")]
    # when the stack gets Ctrl-C
    assert stack.stop() == 0
    # then every child is gone
    poll(lambda: all(gone(pid) for pid in pids), timeout=20)
    # when it starts again on the same data dir (same ports are free again: it takes them back)
    again = DevRun("--keyed", "--model", str(tiny_model), cwd=dirs["cwd"], data_dir=dirs["data"],
                   port=stack.port, ddb_port=stack.ddb_port, agent_port=stack.agent_port)
    try:
        again.wait_for(r"^Isthmus is up: ", timeout=240)
        # then it says the keys exist and where, without printing them
        assert "Keyed mode: keys already exist for this data dir" in again.output
        assert keys["master"] not in again.output and keys["api"] not in again.output
        assert "0 tables created" in again.output  # its own store, persisted
        # and the first start's API key still works, while no key is still refused
        answer = chat(again.base, keys["api"])
        assert answer.status_code == 200, answer.text
        assert chat(again.base, None).status_code == 401
    finally:
        assert again.stop() == 0


def test_an_agent_that_keeps_crashing_is_given_up_on_and_everything_stops(tiny_model: Path,
                                                                          tmp_path: Path) -> None:
    # given a model directory that looks right but cannot load (its weights are garbage)
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text((tiny_model / "config.json").read_text())
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    (tmp_path / "cwd").mkdir()
    # when `isthmus dev` runs it with a restart limit of 2
    run = DevRun("--model", str(broken), "--restart-limit", "2", cwd=tmp_path / "cwd", data_dir=tmp_path / "data")
    try:
        code = run.exit_code(timeout=180)
    finally:
        run.stop()
    # then the agent was restarted once, then given up on with its log's last lines, and the stack stopped
    # (a failed load exits 1, or now and then dies by SIGABRT as mlx's threads are torn down: a crash either way)
    assert code == 1
    assert re.search(r"^node agent (exited with code 1|was killed by SIGABRT) after \d+ s; restarting in 0.5 s",
                     run.output, re.M)
    assert "crashed 2 times in a row within 30 s of starting: giving up" in run.output
    assert "could not load" in run.output and "Isthmus is up" not in run.output
    assert run.lines[-1] == "stopped"
    poll(lambda: all(gone(run.pid_of(name)) for name in ("DynamoDB Local", "node agent", "edge")), timeout=20)


def test_a_model_that_does_not_exist_is_refused_before_anything_starts(tmp_path: Path) -> None:
    # when `isthmus dev` is given a model that is neither a model directory, nor on disk, nor fetchable
    run = DevRun("--model", str(tmp_path / "no-such-model"), cwd=tmp_path, data_dir=tmp_path / "data")
    # then it says so and starts nothing
    assert run.exit_code() == 2
    assert "no model" in run.output and "DynamoDB Local" not in run.output


def test_isthmus_ddb_refuses_a_taken_port(tmp_path: Path) -> None:
    # given a port some other server listens on
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        # when `isthmus ddb` is asked to run there
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "layers"), str(ROOT / "shared")])}
        done = subprocess.run([sys.executable, "-m", "local_runtime.cli", "ddb", "--port", str(port), "--data-dir",
                               str(tmp_path / "data")], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=60, check=False)
    # then it refuses with the reason and writes nothing
    assert done.returncode == 2
    assert f"port {port} is taken by another process" in done.stderr
    assert not (tmp_path / "data").exists()


def test_a_sigkilled_dev_takes_its_children_with_it(tiny_model: Path, tmp_path: Path) -> None:
    # given a stack that is up, whose children are recorded in its data dir
    (tmp_path / "cwd").mkdir()
    run = DevRun("--model", str(tiny_model), cwd=tmp_path / "cwd", data_dir=tmp_path / "data")
    pids: dict[str, int] = {}
    try:
        run.wait_for(r"^Isthmus is up: ", timeout=240)
        pids.update({name: run.pid_of(name) for name in ("DynamoDB Local", "node agent", "edge")})
        recorded = json.loads((tmp_path / "data" / "dev.children.json").read_text())
        assert {e["name"]: e["pid"] for e in recorded} == pids
        # when `isthmus dev` itself is killed outright (no handler runs, nothing of its own cleans up)
        run.proc.kill()
        assert run.exit_code(10) == -signal.SIGKILL
        # then every child is gone within seconds, so the ports are free for the next start
        poll(lambda: all(gone(pid) for pid in pids.values()), timeout=10, interval=0.1)
        poll(lambda: port_free(run.port) and port_free(run.ddb_port) and port_free(run.agent_port), timeout=10)
    finally:
        for pid in pids.values():
            if not gone(pid):
                os.kill(pid, signal.SIGKILL)
        run.stop()
