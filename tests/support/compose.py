"""One project of the composed stack (docker/compose.yaml + tests/deploy/compose.test.yaml, the
scripted fake model as a service of it), on loopback ports: used by tests/deploy/test_compose.py
and by bench/compose_load.py. Needs a Docker engine and Compose (v2 ``docker compose`` or v1.29
``docker-compose``); the images come from docker/build-offline.sh (``build_images``)."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from pathlib import Path

import httpx

from tests.support.server import free_port

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker" / "compose.yaml"
TEST_OVERRIDE = ROOT / "tests" / "deploy" / "compose.test.yaml"
BUILD = ROOT / "docker" / "build-offline.sh"


def build_images() -> None:
    """Every image of the stack, offline and cached (seconds when nothing changed)."""
    build = subprocess.run(["bash", str(BUILD)], capture_output=True, text=True, timeout=1800, stdin=subprocess.DEVNULL)
    assert build.returncode == 0, f"docker/build-offline.sh failed:\n{build.stderr[-4000:]}"


def compose_command() -> list[str]:
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    raise AssertionError("neither `docker compose` nor `docker-compose` is installed (scripts/test installs it)")


def docker_engine():
    import docker

    engine = docker.from_env()
    engine.ping()
    return engine


class Stack:
    """One compose project of docker/compose.yaml + compose.test.yaml, on loopback ports.

    ``replicas``: server replicas (``--scale assistantd=N``); ``env``: more variables for compose
    (ASSISTANTD_* ones reach the servers); ``fake_no_record``: the fake model keeps no record of its
    requests (``--no-record``: flat memory under a benchmark's load)."""

    def __init__(self, workdir: Path, replicas: int = 2, env: dict[str, str] | None = None,
                 fake_no_record: bool = False) -> None:
        self.project = f"assistantd-ci-{secrets.token_hex(4)}"
        self.replicas = replicas
        self.port = free_port()
        self.password = secrets.token_hex(8)
        self.engine = docker_engine()
        env_file = workdir / "empty.env"  # no docker/.env of the developer's leaks in
        env_file.write_text("")
        files = [COMPOSE_FILE, TEST_OVERRIDE]
        if fake_no_record:
            override = workdir / "fake-no-record.yaml"
            override.write_text(
                "services:\n  fake-upstream:\n    command: [\"python3\", \"-m\", \"assistantd.testing.fake_upstream\", "
                "\"--host\", \"0.0.0.0\", \"--port\", \"9000\", \"--no-record\"]\n")
            files.append(override)
        self.command = [*compose_command(), "-p", self.project, "--env-file", str(env_file),
                        *(arg for f in files for arg in ("-f", str(f)))]
        self.env = {**{k: v for k, v in os.environ.items() if not k.startswith(("ASSISTANTD_", "POSTGRES_"))},
                    "ASSISTANTD_BIND": "127.0.0.1", "ASSISTANTD_PORT": str(self.port),
                    "POSTGRES_PASSWORD": self.password,
                    "ASSISTANTD_DOCKER_GID": str(os.stat("/var/run/docker.sock").st_gid),
                    # Passed through (the setting reaches the replicas); one warm kernel per replica
                    # instead of two keeps the start light on a small machine.
                    "ASSISTANTD_SANDBOX_WARM_POOL": "1",
                    "ASSISTANTD_LOG_LEVEL": "info"}
        for name in ("ASSISTANTD_IMAGE", "ASSISTANTD_POSTGRES_IMAGE", "ASSISTANTD_FRONT_IMAGE", "ASSISTANTD_SANDBOX_IMAGE"):
            if os.environ.get(name):
                self.env[name] = os.environ[name]
        self.env.update(env or {})
        self.volumes: set[str] = set()
        self.down_done = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def compose(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run([*self.command, *args], env=self.env, capture_output=True, text=True,
                                timeout=timeout, stdin=subprocess.DEVNULL)
        if check and result.returncode != 0:
            raise AssertionError(f"compose {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-4000:]}"
                                 f"\n--- logs ---\n{self.logs()}")
        return result

    def logs(self, tail: int = 60) -> str:
        try:
            return subprocess.run([*self.command, "logs", "--no-color", "--tail", str(tail)], env=self.env,
                                  capture_output=True, text=True, timeout=60).stdout[-12000:]
        except Exception as exc:  # the logs are a diagnosis, never the failure
            return f"(no logs: {exc})"

    def containers(self, service: str | None = None, all: bool = False) -> list:
        labels = [f"com.docker.compose.project={self.project}"]
        if service:
            labels.append(f"com.docker.compose.service={service}")
        return self.engine.containers.list(all=all, filters={"label": labels}, ignore_removed=True)

    def up(self) -> None:
        self.compose("up", "-d", "--scale", f"assistantd={self.replicas}", timeout=900)
        for container in self.containers(all=True):  # their anonymous volumes too, for the check at the end
            self.volumes.update(m["Name"] for m in container.attrs["Mounts"] if m.get("Type") == "volume")
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            replicas = self.containers("assistantd")
            healthy = [c for c in replicas if c.attrs["State"].get("Health", {}).get("Status") == "healthy"]
            try:
                front_ok = httpx.get(f"{self.url}/healthz", timeout=5).status_code == 200
            except httpx.HTTPError:
                front_ok = False
            if front_ok and len(healthy) == self.replicas:
                return
            time.sleep(1)
        raise AssertionError(f"the stack did not become healthy in 300 s\n{self.logs()}")

    def fake_port(self) -> int:
        out = self.compose("port", "fake-upstream", "9000").stdout.strip()
        return int(out.rsplit(":", 1)[1])

    def down(self) -> None:
        if not self.down_done:
            self.compose("down", "-v", "--remove-orphans", "-t", "15", timeout=300)
            self.down_done = True

    def sandbox_instance(self) -> str:
        """The label the stack's servers give their sandboxes (from their data dir and database)."""
        from assistantd.sandbox.pool import instance_id
        from assistantd.settings import Settings

        settings = Settings(_env_file=None, data_dir=Path("/data"),
                            database_url=f"postgresql://assistantd:{self.password}@postgres:5432/assistantd")
        return instance_id(settings)

    def leftovers(self) -> dict[str, list[str]]:
        label = {"label": f"com.docker.compose.project={self.project}"}
        names = {v.name for v in self.engine.volumes.list()}
        sandboxes = self.engine.containers.list(
            all=True, filters={"label": ["assistantd.sandbox=1", f"assistantd.instance={self.sandbox_instance()}"]},
            ignore_removed=True)
        return {"containers": [c.name for c in self.engine.containers.list(all=True, filters=label, ignore_removed=True)],
                "networks": [n.name for n in self.engine.networks.list(filters=label)],
                "volumes": sorted({v.name for v in self.engine.volumes.list(filters=label)} | (self.volumes & names)),
                "sandboxes": [c.name for c in sandboxes]}

    def force_clean(self) -> None:
        """After a failure: whatever down left."""
        for container in self.containers(all=True) + self.engine.containers.list(
                all=True, filters={"label": [f"assistantd.instance={self.sandbox_instance()}"]}, ignore_removed=True):
            try:
                container.remove(force=True)
            except Exception:
                pass
        label = {"label": f"com.docker.compose.project={self.project}"}
        for network in self.engine.networks.list(filters=label):
            try:
                network.remove()
            except Exception:
                pass
        for volume in self.engine.volumes.list():
            if volume.name in self.volumes or volume.attrs.get("Labels", {}) and \
                    (volume.attrs["Labels"] or {}).get("com.docker.compose.project") == self.project:
                try:
                    volume.remove(force=True)
                except Exception:
                    pass

    def close(self) -> None:
        """``down -v``, then whatever it left removed: always leaves nothing of the project."""
        try:
            self.down()
        finally:
            if any(self.leftovers().values()):
                self.force_clean()
