"""A real multi-node Ray cluster on one machine: a head and worker raylets, each its own ``ray start``.

Each node is a ``ray start --block`` process leading its own process group (GCS/raylet/workers below it),
so a node can be lost the way a machine is lost (SIGKILL to the whole group) and the cluster torn down
without ``ray stop``, which would kill every Ray process of the machine, other people's included. Every
node declares a custom resource ``node:<name>``-like ``fer_node_<name>: 1`` so tests and users can tell
which node a trial ran on.

Try the cluster path of the project without a cloud::

    python -m cluster.local --workers 2 --temp-dir /tmp/fsl     # prints the address; Ctrl-C stops it
    RAY_ADDRESS=<address> fersearch search spec.yaml             # or: fersearch submit spec.yaml --address …
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

# Seconds the GCS waits before declaring a silent raylet dead: Ray's default (~30 s) makes every node-loss
# test wait; one machine has no network partitions to be patient about.
FAST_FAILURE_DETECTION = {
    "RAY_health_check_initial_delay_ms": "1000",
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_timeout_ms": "1000",
    "RAY_health_check_failure_threshold": "3",
}


def free_ports(n: int, taken: set[int] | None = None) -> list[int]:
    """``n`` distinct free ports, none in ``taken`` (which grows by them). The sockets stay bound until all
    are picked: ports picked one at a time can repeat, and Ray refuses a node whose components share one."""
    taken = set() if taken is None else taken
    socks: list[socket.socket] = []
    try:
        while len(socks) < n:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            if s.getsockname()[1] in taken:
                s.close()
                continue
            socks.append(s)
        ports = [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()
    taken.update(ports)
    return ports


def node_resource(name: str) -> str:
    """The custom resource that marks node ``name`` (one unit, on that node only)."""
    return f"fer_node_{name}"


def ray_executable() -> str:
    candidate = Path(sys.executable).with_name("ray")
    return str(candidate) if candidate.exists() else "ray"


def _children_map() -> dict[int, list[int]]:
    """``ppid -> [pid]`` of every process, from /proc (Linux; no psutil in the project's dependencies)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid …; comm may hold spaces and parentheses: split after the last ")".
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    return children


def descendants(pid: int) -> list[int]:
    """``pid`` and all processes below it (children, grandchildren, …) that are alive now."""
    children, out, todo = _children_map(), [], [pid]
    while todo:
        p = todo.pop()
        if Path(f"/proc/{p}").exists():
            out.append(p)
        todo.extend(children.get(p, []))
    return out


def _kill(pids: list[int], sig: int) -> None:
    for p in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(p, sig)


def _wait_gone(pids: list[int], timeout: float) -> list[int]:
    """Wait until none of ``pids`` is running (zombies count as gone); the ones still running."""
    deadline = time.monotonic() + timeout
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if _running(p)]
        if alive:
            time.sleep(0.1)
    return alive


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def run_reaped(cmd: list[str], *, timeout: float, **popen: object) -> subprocess.CompletedProcess:
    """``subprocess.run`` that, on timeout, kills the command *and everything it started*: a driver that
    owns a LocalCluster starts its nodes in sessions of their own, which would outlive a plain kill."""
    capture = popen.pop("capture_output", False)
    if capture:
        popen.update(stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    with subprocess.Popen(cmd, **popen) as proc:  # type: ignore[call-overload]
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            tree = descendants(proc.pid)
            _kill(tree, signal.SIGKILL)
            for pid in tree:  # the nodes' own process groups (GCS, raylets, workers)
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
            proc.communicate()
            raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


@dataclass
class Node:
    name: str
    proc: subprocess.Popen
    num_cpus: float
    num_gpus: float
    resources: dict[str, float]
    log: Path
    alive: bool = True

    def pids(self) -> set[int]:
        """Every process this node started (``ray start``, raylet, GCS, workers, …) that is alive."""
        return set(descendants(self.proc.pid))


@dataclass
class LocalCluster:
    """Head and workers as separate ``ray start --block`` process groups under one ``temp_dir``.

    ``temp_dir`` must be short: Ray puts unix sockets under it (limit ~100 characters).
    """

    temp_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    fast_failure_detection: bool = True
    nodes: dict[str, Node] = field(default_factory=dict)
    port: int = 0
    dashboard_port: int = 0
    ports_taken: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.temp_dir = Path(self.temp_dir)
        self.temp_dir.mkdir(parents=True, exist_ok=True)
        if len(str(self.temp_dir)) > 40:
            raise ValueError(f"temp_dir {self.temp_dir} is too long for Ray's unix sockets (e.g. /tmp/fsl)")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def node_env(self) -> dict[str, str]:
        """The environment of every node (and what a driver of this cluster should run with)."""
        env = dict(os.environ)
        env.update(
            RAY_AUTH_MODE="disabled",
            RAY_USAGE_STATS_ENABLED="0",
            RAY_DEDUP_LOGS="0",
            RAY_TMPDIR=str(self.temp_dir),
            # The job entrypoint's `python` is this interpreter (the project's venv).
            PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        )
        if self.fast_failure_detection:
            env.update(FAST_FAILURE_DETECTION)
        env.update(self.env)
        return env

    def _start(self, name: str, args: list[str], num_cpus: float, num_gpus: float, resources: dict) -> Node:
        if name in self.nodes:
            raise ValueError(f"node {name!r} exists")
        resources = {node_resource(name): 1, **resources}
        agent, agent_grpc, runtime_env, metrics = free_ports(4, self.ports_taken)
        log = self.temp_dir / f"node_{name}.log"
        cmd = [
            ray_executable(), "start", "--block", "--disable-usage-stats",
            f"--temp-dir={self.temp_dir}",
            f"--num-cpus={num_cpus:g}", f"--num-gpus={num_gpus:g}", f"--resources={json.dumps(resources)}",
            f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
            f"--runtime-env-agent-port={runtime_env}", f"--metrics-export-port={metrics}",
            *args,
        ]  # fmt: skip
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, env=self.node_env(), start_new_session=True
            )
        node = Node(name, proc, num_cpus, num_gpus, resources, log)
        self.nodes[name] = node
        return node

    def start_head(
        self,
        *,
        num_cpus: float = 0,
        num_gpus: float = 0,
        resources: dict | None = None,
        dashboard: bool = False,
        timeout: float = 60,
    ) -> str:
        """Start the head and wait until it accepts nodes. ``dashboard`` serves the Jobs REST API on
        ``dashboard_port`` (needs ``ray[default]``); without it, jobs go through GCS (cluster/submit.py)."""
        self.port, self.dashboard_port = free_ports(2, self.ports_taken)
        self._start(
            "head",
            [
                "--head", f"--port={self.port}", "--node-ip-address=127.0.0.1",
                f"--include-dashboard={'true' if dashboard else 'false'}", "--dashboard-host=127.0.0.1",
                f"--dashboard-port={self.dashboard_port}",
            ],
            num_cpus, num_gpus, resources or {},
        )  # fmt: skip
        self.wait_for_nodes(1, timeout)
        return self.address

    def add_node(
        self,
        name: str,
        *,
        num_cpus: float = 1,
        num_gpus: float = 0,
        resources: dict | None = None,
        wait: bool = True,
        timeout: float = 60,
    ) -> Node:
        """Start a worker node that joins the head; with ``wait`` return once GCS lists it alive."""
        node = self._start(
            # One log monitor per host (the head's): the nodes share this temp dir and its log files, and
            # one monitor per node would send every line to the driver once per node.
            name, [f"--address={self.address}", "--node-ip-address=127.0.0.1", "--include-log-monitor=False"],
            num_cpus, num_gpus,
            resources or {},
        )  # fmt: skip
        if wait:
            self.wait_for_nodes(sum(n.alive for n in self.nodes.values()), timeout)
        return node

    def alive_nodes(self) -> list[dict]:
        """GCS's view: alive nodes with their resources (read with a throwaway GCS client, no driver)."""
        from ray._raylet import GcsClient
        from ray.core.generated.gcs_pb2 import GcsNodeInfo

        infos = GcsClient(address=self.address).get_all_node_info(
            timeout=10, state_filter=GcsNodeInfo.GcsNodeState.ALIVE
        )
        return [
            {"node_id": i.node_id.hex(), "resources": dict(i.resources_total), "head": i.is_head_node}
            for i in infos.values()
        ]

    def node_ids(self) -> dict[str, str]:
        """``name -> node id`` of the alive nodes, matched by their ``fer_node_<name>`` resource."""
        ids = {}
        for info in self.alive_nodes():
            for name in self.nodes:
                if info["resources"].get(node_resource(name)):
                    ids[name] = info["node_id"]
        return ids

    def wait_for_nodes(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            for node in self.nodes.values():
                if node.alive and node.proc.poll() is not None:
                    code = node.proc.returncode
                    raise RuntimeError(f"node {node.name} exited ({code}):\n{self.tail(node.name)}")
            try:
                if len(self.alive_nodes()) >= count:
                    return
            except Exception as e:  # GCS not up yet
                last = e
            time.sleep(0.5)
        raise TimeoutError(f"{count} node(s) not alive after {timeout}s ({last}):\n{self.tail('head')}")

    def wait_node_dead(self, name: str, timeout: float = 60) -> None:
        """Until GCS no longer lists node ``name`` as alive (its trials' actors are then declared dead)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if name not in self.node_ids():
                return
            time.sleep(0.5)
        raise TimeoutError(f"node {name} still alive in GCS after {timeout}s")

    def kill_node(self, name: str) -> None:
        """Lose node ``name`` like a machine: SIGKILL to its raylet, workers and everything else it ran."""
        node = self.nodes[name]
        procs = descendants(node.proc.pid)
        _kill(procs, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(node.proc.pid, signal.SIGKILL)
        node.proc.wait(timeout=10)
        _wait_gone(procs, 10)
        node.alive = False

    def shutdown(self, grace_s: float = 3) -> None:
        """Stop every node at once: SIGTERM to each ``ray start``, ``grace_s`` to exit, then SIGKILL to all
        that is left of their process trees. (A teardown, not a drain: nothing is waited for.)"""
        procs = {name: descendants(n.proc.pid) for name, n in self.nodes.items() if n.proc.poll() is None}
        for name in procs:
            with contextlib.suppress(ProcessLookupError):
                self.nodes[name].proc.send_signal(signal.SIGTERM)
        everything = [p for ps in procs.values() for p in ps]
        _kill(_wait_gone(everything, grace_s), signal.SIGKILL)
        for name in procs:
            node = self.nodes[name]
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(node.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                node.proc.wait(timeout=5)
        _wait_gone(everything, 5)
        for node in self.nodes.values():
            node.alive = False

    def tail(self, name: str, lines: int = 30) -> str:
        node = self.nodes.get(name)
        if node is None or not node.log.is_file():
            return ""
        return "\n".join(node.log.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cluster.local", description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--cpus-per-worker", type=float, default=1)
    p.add_argument("--gpus-per-worker", type=float, default=0, help="logical (fake) GPUs are fine")
    p.add_argument("--temp-dir", default="/tmp/fsl")
    args = p.parse_args(argv)
    cluster = LocalCluster(Path(args.temp_dir))
    try:
        cluster.start_head()
        for i in range(args.workers):
            cluster.add_node(f"w{i}", num_cpus=args.cpus_per_worker, num_gpus=args.gpus_per_worker)
        print(f"cluster up: {cluster.address} ({args.workers} workers); Ctrl-C stops it", flush=True)
        print(f"  RAY_ADDRESS={cluster.address} RAY_AUTH_MODE=disabled fersearch search SPEC", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    sys.exit(main())
