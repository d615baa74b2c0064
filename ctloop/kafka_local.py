"""A real single-node KRaft Kafka broker on 127.0.0.1 for laptops (`ctloop kafka up`) and tests.

The Apache Kafka jars are fetched once with Maven into a cache outside the repo and the broker runs
as a plain Java process. The same jars make the Kafka image (docker/build.sh kafka) that the test
suite starts through testcontainers where a Docker engine answers (tests/fixtures/kafka.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ctloop.failures import Failure

KAFKA_VERSION = "4.1.2"
# Kafka 4.1 logs through SLF4J 1.7 + log4j2 but its POM leaves the binding out; without it the
# broker logs nothing. The version matches the log4j-core that kafka_2.13 4.1.2 pulls in.
LOG4J_SLF4J_VERSION = "2.25.3"
HEAP = "-Xmx384m"

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>ctloop</groupId><artifactId>kafka-broker-libs</artifactId><version>1</version>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>{kafka}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j}</version></dependency>
  </dependencies>
</project>
"""

_LOG4J2 = """rootLogger.level=WARN
rootLogger.appenderRef.out.ref=OUT
appender.out.type=Console
appender.out.name=OUT
appender.out.layout.type=PatternLayout
appender.out.layout.pattern=[%d] %p %m (%c)%n
"""

_INSTALL_HINT = (
    "install a JDK (17 or newer) and Maven (e.g. `apt-get install openjdk-17-jdk-headless maven`), "
    "or run a Docker engine"
)


class BrokerError(RuntimeError, Failure):
    """The local broker could not be set up, started or stopped; the message says why."""


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ctloop"


def docker_available() -> bool:
    """True when a Docker engine answers (not merely when the CLI is installed)."""
    if shutil.which("docker") is None:
        return False
    try:
        done = subprocess.run(["docker", "info"], capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def broker_libs(version: str = KAFKA_VERSION) -> Path:
    """The broker's runtime classpath directory, fetched with Maven on first use."""
    root = cache_root() / f"kafka-{version}"
    libs = root / "libs"
    if (root / ".complete").exists():
        return libs
    mvn = shutil.which("mvn")
    if shutil.which("java") is None or mvn is None:
        raise BrokerError(f"running a local Kafka broker needs Java and Maven, or Docker: {_INSTALL_HINT}")
    root.mkdir(parents=True, exist_ok=True)
    # Several test sessions may start at once on one machine; one fetches, the others wait.
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (root / ".complete").exists():
            return libs
        with tempfile.TemporaryDirectory(prefix="ctloop-kafka-pom-") as tmp:
            staging = root / f"libs.partial-{os.getpid()}"
            shutil.rmtree(staging, ignore_errors=True)
            (Path(tmp) / "pom.xml").write_text(_POM.format(kafka=version, log4j=LOG4J_SLF4J_VERSION))
            done = subprocess.run(
                [mvn, "-q", "-B", "dependency:copy-dependencies", "-DincludeScope=runtime",
                 f"-DoutputDirectory={staging}"],
                cwd=tmp, capture_output=True, text=True, check=False,
            )
            if done.returncode != 0 or not any(staging.glob("kafka_2.13-*.jar")):
                raise BrokerError(
                    f"Maven could not fetch Apache Kafka {version} (exit {done.returncode}):\n"
                    f"{(done.stdout + done.stderr)[-2000:]}"
                )
            shutil.rmtree(libs, ignore_errors=True)
            staging.rename(libs)
        (root / ".complete").write_text(version)
    return libs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def broker_answers(bootstrap: str, timeout_s: float = 2.0) -> bool:
    """True when a Kafka broker at `bootstrap` serves cluster metadata."""
    from kafka import KafkaAdminClient

    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, bootstrap_timeout_ms=int(timeout_s * 1000),
                                 request_timeout_ms=max(1000, int(timeout_s * 1000)), client_id="ctloop-probe")
    except Exception:
        return False
    try:
        return bool(admin.describe_cluster().get("brokers"))
    except Exception:
        return False
    finally:
        admin.close()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A dead child not yet reaped still answers kill(0); /proc tells zombies apart.
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][:1] != "Z"
    return True


def saved_ports(data_dir: Path) -> tuple[int, int] | None:
    """(broker, controller) ports a data dir was formatted for; None before the first start."""
    try:
        saved = json.loads((Path(data_dir) / "ports.json").read_text())
    except (OSError, ValueError):
        return None
    return int(saved["port"]), int(saved["controller_port"])


@dataclass(frozen=True)
class BrokerState:
    """What `ctloop kafka` needs to find a detached broker again."""

    pid: int
    port: int
    controller_port: int
    data_dir: str

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self)))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> BrokerState | None:
        try:
            return cls(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return None


class LocalKafka:
    """A KRaft broker+controller as a Java process, its storage in `data_dir` (reused on restart)."""

    def __init__(self, data_dir: Path | str, port: int | None = None, *, heap: str = HEAP) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.heap = heap
        saved = saved_ports(self.data_dir)
        # The broker port may change between starts; the controller's is recorded in the formatted metadata.
        self.port = port or (saved[0] if saved else free_port())
        self.controller_port = saved[1] if saved else free_port()
        self._process: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "broker.log"

    @property
    def running(self) -> bool:
        return self.pid is not None and pid_alive(self.pid)

    def state(self) -> BrokerState:
        if self.pid is None:
            raise BrokerError("the broker is not running")
        return BrokerState(self.pid, self.port, self.controller_port, str(self.data_dir))

    @classmethod
    def attach(cls, state: BrokerState) -> LocalKafka:
        """The broker a (possibly other) process started and described by `state`."""
        broker = cls(state.data_dir, state.port)
        broker.pid = state.pid
        return broker

    def start(self, timeout_s: float = 120.0) -> None:
        if self.running:
            return
        libs = broker_libs()
        java = shutil.which("java")
        if java is None:
            raise BrokerError(f"running a local Kafka broker needs Java: {_INSTALL_HINT}")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self._write_config()
        classpath = f"{libs}/*"
        jvm = [java, self.heap, "-Xms64m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-XX:+ExitOnOutOfMemoryError",
               "-Djava.awt.headless=true", f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}",
               "-cp", classpath]
        if not (self.data_dir / "logs" / "meta.properties").exists():
            self._format(jvm, config)
        for port, role in ((self.port, "broker"), (self.controller_port, "controller")):
            if port_in_use(port):
                raise BrokerError(f"the {role} port {port} on 127.0.0.1 is already taken")
        with open(self.log_path, "ab") as log:
            # A session of its own: Ctrl-C in a terminal that ran `ctloop kafka up` must not reach it.
            self._process = subprocess.Popen(
                [*jvm, "kafka.Kafka", str(config)], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pid = self._process.pid
        self._wait_ready(timeout_s)

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM (a clean shutdown that flushes the log), then SIGKILL after `timeout_s`."""
        if self.pid is None:
            return
        pid, self.pid = self.pid, None
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if not self._wait_exit(pid, timeout_s):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            self._wait_exit(pid, 10.0)
        self._process = None

    def kill(self) -> None:
        """SIGKILL, no clean shutdown: what a crashed broker looks like."""
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            self._wait_exit(self.pid, 10.0)
            self.pid = None
            self._process = None

    def restart(self, timeout_s: float = 120.0) -> None:
        self.stop()
        self.start(timeout_s)

    def __enter__(self) -> LocalKafka:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _write_config(self) -> Path:
        ports = {"port": self.port, "controller_port": self.controller_port}
        (self.data_dir / "ports.json").write_text(json.dumps(ports))
        (self.data_dir / "log4j2.properties").write_text(_LOG4J2)
        settings = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": f"127.0.0.1:{self.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.data_dir / "logs"),
            "num.partitions": "1",
            "auto.create.topics.enable": "true",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            # A consumer's first poll must not wait for more members to join a fresh group.
            "group.initial.rebalance.delay.ms": "0",
            # Lets tests use short session timeouts, so a killed consumer's partitions move quickly.
            "group.min.session.timeout.ms": "500",
            "num.network.threads": "2",
            "num.io.threads": "2",
            "background.threads": "2",
            "log.cleaner.enable": "false",
        }
        path = self.data_dir / "server.properties"
        path.write_text("".join(f"{key}={value}\n" for key, value in settings.items()))
        return path

    def _format(self, jvm: list[str], config: Path) -> None:
        cluster_id = subprocess.run([*jvm, "kafka.tools.StorageTool", "random-uuid"], capture_output=True, text=True,
                                    check=False).stdout.strip()
        done = subprocess.run(
            [*jvm, "kafka.tools.StorageTool", "format", "--standalone", "-t", cluster_id, "-c", str(config)],
            capture_output=True, text=True, check=False,
        )
        if done.returncode != 0:
            output = (done.stdout + done.stderr)[-2000:]
            raise BrokerError(f"formatting Kafka storage in {self.data_dir} failed:\n{output}")

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise BrokerError(f"the Kafka broker exited with {self._process.returncode}:\n{self._log_tail()}")
            if port_in_use(self.port) and broker_answers(self.bootstrap):
                return
            time.sleep(0.2)
        self.stop()
        raise BrokerError(
            f"the Kafka broker did not answer at {self.bootstrap} within {timeout_s:.0f}s:\n{self._log_tail()}"
        )

    def _wait_exit(self, pid: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process is not None and self._process.pid == pid:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._process.wait(timeout=0.1)
                    return True
            elif not pid_alive(pid):
                return True
            else:
                time.sleep(0.1)
        return False

    def _log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no broker log)"

