"""A single-node Kafka broker (KRaft, broker and controller in one JVM) run from Maven Central jars."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from services.localinfra import layout
from services.localinfra.errors import FetchError, PortInUseError, ServerStartError
from services.localinfra.processes import (
    PidFile,
    is_alive,
    log_size,
    log_tail,
    log_text,
    port_open,
    require_tool,
    spawn_detached,
    terminate,
    wait_until,
)
from services.settings import Settings

HOST = "127.0.0.1"
MAIN_CLASS = "kafka.Kafka"
STORAGE_TOOL = "kafka.tools.StorageTool"
STARTED_MESSAGE = "Kafka Server started"
"""What the broker logs once it serves clients (KafkaRaftServer's startup message)."""

DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.6.1:copy-dependencies"
_FETCHED_MARKER = "fetched"
_MVN_HINT = "install Maven (scripts/setup does: apt-get install -y maven)"
_JAVA_HINT = "install Java 17+ (scripts/setup does: apt-get install -y openjdk-17-jre-headless)"

LOG4J2_PROPERTIES = """\
# Console only: the broker's output goes to kafka.log beside this file.
appender.out.type = Console
appender.out.name = STDOUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = STDOUT
# Per-request and state-change chatter is not useful on a development broker.
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.statechange.name = state.change.logger
logger.statechange.level = WARN
"""


def fetch_jars(libs: Path, version: str, *, pom: Path | None = None) -> bool:
    """Fetch the broker's jars into ``libs`` with Maven unless already there; whether it fetched.

    The jars land in a sibling folder first and the marker is written last, so an interrupted
    fetch is simply redone.
    """
    marker = libs.parent / _FETCHED_MARKER
    if marker.is_file() and libs.is_dir():
        return False
    pom = pom or layout.kafka_pom()
    if not pom.is_file():
        raise FetchError(f"the Kafka pom is missing at {pom}: run from a checkout of the project")
    mvn = require_tool("mvn", _MVN_HINT)
    partial = libs.parent / "libs.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    command = [
        mvn,
        "-B",
        "-q",
        "-f",
        str(pom),
        f"-Dkafka.version={version}",
        DEPENDENCY_PLUGIN,
        f"-DoutputDirectory={partial}",
        "-DincludeScope=runtime",
    ]
    fetched = subprocess.run(command, capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL)
    if fetched.returncode != 0 or not any(partial.glob("kafka_2.13-*.jar")):
        output = (fetched.stdout + fetched.stderr).strip().splitlines()[-30:]
        raise FetchError(
            f"Maven could not fetch Kafka {version} (exit {fetched.returncode}) with: {' '.join(command)}\n"
            + "\n".join(output)
        )
    shutil.rmtree(libs, ignore_errors=True)
    partial.rename(libs)
    marker.write_text(f"kafka {version}: {sum(1 for _ in libs.glob('*.jar'))} jars\n")
    return True


def new_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding, not starting with '-'."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


@dataclass(frozen=True)
class KafkaBroker:
    """The local broker: its files under ``home``, its jars in ``libs``, listening on ``HOST``."""

    home: Path
    libs: Path
    version: str
    port: int
    controller_port: int
    heap: str
    partitions: int
    start_timeout_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> KafkaBroker:
        return cls(
            home=layout.kafka_home(settings),
            libs=layout.kafka_libs(settings),
            version=settings.local.kafka_version,
            port=settings.local.kafka_port,
            controller_port=settings.local.kafka_controller_port,
            heap=settings.local.kafka_heap,
            partitions=settings.kafka.partitions,
            start_timeout_s=settings.local.start_timeout_s,
        )

    @property
    def bootstrap_servers(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def data(self) -> Path:
        return self.home / "data"

    @property
    def config_file(self) -> Path:
        return self.home / "server.properties"

    @property
    def log_config_file(self) -> Path:
        return self.home / "log4j2.properties"

    @property
    def log_file(self) -> Path:
        return self.home / "kafka.log"

    @property
    def pid_file(self) -> PidFile:
        return PidFile(self.home / "kafka.pid")

    def server_properties(self) -> str:
        """The broker's configuration: combined mode, static single-voter quorum, loopback only."""
        settings = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{HOST}:{self.controller_port}",
            "listeners": f"PLAINTEXT://{HOST}:{self.port},CONTROLLER://{HOST}:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{HOST}:{self.port}",
            "inter.broker.listener.name": "PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.data),
            "num.partitions": str(self.partitions),
            "auto.create.topics.enable": "true",
            # Kafka is the source of truth for the KPI state: keep the log unless a topic says otherwise.
            "log.retention.ms": "-1",
            "group.initial.rebalance.delay.ms": "0",
            # One broker: internal topics cannot be replicated, and few partitions start faster.
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "4",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
        }
        header = "# Written by services/localinfra/kafka_broker.py on every start; edits are lost."
        return "\n".join([header, *(f"{key}={value}" for key, value in settings.items())]) + "\n"

    # -- lifecycle --

    def pid(self) -> int | None:
        """PID of our running broker, if any."""
        return self.pid_file.live_pid(MAIN_CLASS, str(self.config_file))

    def answers(self) -> bool:
        return port_open(HOST, self.port)

    def start(self) -> tuple[int, bool]:
        """Start the broker unless ours is already running; (PID, whether this call started it)."""
        pid = self.pid()
        if pid is not None:
            if not wait_until(self.answers, timeout=self.start_timeout_s, interval=0.2):
                raise ServerStartError(
                    f"our Kafka broker (pid {pid}) runs but does not answer on {self.bootstrap_servers}; "
                    f"stop it with 'crm-pulse infra down'. Log tail ({self.log_file}):\n{log_tail(self.log_file)}"
                )
            return pid, False
        for port in (self.port, self.controller_port):
            if port_open(HOST, port):
                raise PortInUseError(
                    f"{HOST}:{port} is taken by a process that is not our Kafka broker (no live pid in "
                    f"{self.pid_file.path}); stop it, or choose other ports with CRM_PULSE_LOCAL__KAFKA_PORT "
                    "and CRM_PULSE_LOCAL__KAFKA_CONTROLLER_PORT"
                )
        java = _java()
        fetch_jars(self.libs, self.version)
        self.home.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(self.server_properties())
        self.log_config_file.write_text(LOG4J2_PROPERTIES)
        self._format_storage(java)
        log_start = log_size(self.log_file)
        pid = spawn_detached(self._command(java), log_path=self.log_file, cwd=self.home)
        self.pid_file.write(pid)
        self._wait_ready(pid, log_start)
        return pid, True

    def stop(self, *, timeout: float = 30.0) -> int | None:
        """Stop our broker if it runs (SIGTERM, then SIGKILL after ``timeout`` s); the PID it had."""
        pid = self.pid()
        if pid is not None:
            terminate(pid, timeout=timeout)
        self.pid_file.remove()
        return pid

    def _command(self, java: str) -> list[str]:
        return [
            java,
            f"-Xms{self.heap}",
            f"-Xmx{self.heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:InitiatingHeapOccupancyPercent=35",
            "-XX:+ExplicitGCInvokesConcurrent",
            "-Djava.awt.headless=true",
            f"-Dkafka.logs.dir={self.home}",
            f"-Dlog4j2.configurationFile={self.log_config_file}",
            "-cp",
            f"{self.libs}/*",
            MAIN_CLASS,
            str(self.config_file),
        ]

    def _format_storage(self, java: str) -> None:
        """Format the log directory once; the cluster id is kept in ``home/cluster.id``."""
        if (self.data / "meta.properties").is_file():
            return
        shutil.rmtree(self.data, ignore_errors=True)
        id_file = self.home / "cluster.id"
        cluster_id = id_file.read_text().strip() if id_file.is_file() else ""
        if not cluster_id:
            cluster_id = new_cluster_id()
            id_file.write_text(cluster_id + "\n")
        command = [
            java,
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.log_config_file}",
            "-cp",
            f"{self.libs}/*",
            STORAGE_TOOL,
            "format",
            "-t",
            cluster_id,
            "-c",
            str(self.config_file),
        ]
        formatted = subprocess.run(command, capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL)
        if formatted.returncode != 0:
            output = (formatted.stdout + formatted.stderr).strip().splitlines()[-20:]
            raise ServerStartError(
                f"formatting Kafka storage in {self.data} failed (exit {formatted.returncode}):\n" + "\n".join(output)
            )

    def _wait_ready(self, pid: int, log_start: int) -> None:
        """Wait until the broker accepts connections and has logged its startup message."""
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if not is_alive(pid):
                self.pid_file.remove()
                raise ServerStartError(
                    f"the Kafka broker exited during startup. Log tail ({self.log_file}):\n"
                    + log_tail(self.log_file, since=log_start)
                )
            if self.answers() and STARTED_MESSAGE in log_text(self.log_file, since=log_start):
                return
            time.sleep(0.2)
        terminate(pid, timeout=10.0)
        self.pid_file.remove()
        raise ServerStartError(
            f"the Kafka broker did not start within {self.start_timeout_s:.0f} s (no '{STARTED_MESSAGE}' and "
            f"connection on {self.bootstrap_servers}); stopped it. Raise CRM_PULSE_LOCAL__START_TIMEOUT_S on a slow "
            f"machine. Log tail ({self.log_file}):\n" + log_tail(self.log_file, since=log_start)
        )


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        return str(Path(java_home) / "bin" / "java")
    return require_tool("java", _JAVA_HINT)
