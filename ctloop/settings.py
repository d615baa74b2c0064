"""Settings from the environment (CTLOOP_*), an optional ctloop.toml, and embedded defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


class Topics(BaseModel, frozen=True):
    data: str = "ctloop.data"
    drift: str = "ctloop.drift"
    models: str = "ctloop.models"
    runs: str = "ctloop.runs"
    predictions: str = "ctloop.predictions"
    labels: str = "ctloop.labels"
    quality: str = "ctloop.quality"
    deadletter: str = "ctloop.deadletter"
    # Candidate runs from the Argo Events Sensors to the admission gateway, keyed by model.
    admission: str = "ctloop.admission"


class Toleration(BaseModel, frozen=True):
    key: str
    operator: Literal["Equal", "Exists"] = "Exists"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = "NoSchedule"


class GpuSettings(BaseModel, frozen=True):
    """What the train step asks of the cluster."""

    gpus: int = 0
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: tuple[Toleration, ...] = ()


class ArgoSettings(BaseModel, frozen=True):
    host: str = "https://localhost:2746"
    token: str | None = None
    namespace: str = "ctloop"
    verify_ssl: bool = True
    service_account: str = "ctloop-workflow"


class Settings(BaseSettings):
    """Everything ctloop reads from its surroundings; the defaults need no configuration."""

    model_config = SettingsConfigDict(
        env_prefix="CTLOOP_",
        env_nested_delimiter="__",
        toml_file="ctloop.toml",
        frozen=True,
        extra="ignore",
    )

    home: Path = Path(".ctloop")
    bus: Literal["embedded", "kafka"] = "embedded"
    kafka_bootstrap: str = "127.0.0.1:9092"
    # How long a command waits for the broker before it says none answered.
    kafka_connect_timeout_s: float = Field(default=5.0, gt=0)
    topics: Topics = Topics()
    engine: Literal["local", "argo"] = "local"
    mlflow_tracking_uri: str | None = None
    s3_endpoint_url: str | None = None
    # Root of the objects ctloop writes for itself (drift reports, alert state): file:// or s3://.
    # Unset: file:// under home; in a cluster an s3:// prefix, so they outlive the pod.
    store_uri: str | None = None
    image: str = "ghcr.io/ctloop/ctloop:0.1.0"
    # The broker image testcontainers starts for the test suite (docker/build.sh kafka builds this one from the
    # Maven jars); with registry access any image of Confluent's layout works, e.g. confluentinc/cp-kafka:7.6.0.
    kafka_image: str = "ctloop/kafka:8.1.0"
    max_event_bytes: int = 1_048_576
    # The admission gateway's shared state (SQLAlchemy URL). Unset: SQLite under home; in a cluster PostgreSQL.
    gateway_store_url: str | None = None
    gpu: GpuSettings = GpuSettings()
    argo: ArgoSettings = ArgoSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))

    @property
    def tracking_uri(self) -> str:
        """MLflow tracking URI; the embedded default is a SQLite file under home."""
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        return f"sqlite:///{(self.home / 'mlflow.db').resolve()}"

    @property
    def artifact_root(self) -> Path:
        return (self.home / "mlartifacts").resolve()

    @property
    def store_root(self) -> Path:
        """Where file:// data of the embedded default lives."""
        return (self.home / "store").resolve()

    @property
    def objects_uri(self) -> str:
        """Where drift reports and alert state go: `store_uri`, else the embedded store's file:// URI."""
        return self.store_uri or self.store_root.as_uri()

    @property
    def state_db(self) -> Path:
        """SQLite file for the embedded bus, run store and sensor decisions."""
        return (self.home / "state.db").resolve()

    @property
    def gateway_store(self) -> str:
        """The admission gateway's store URL: `gateway_store_url`, else a SQLite file under home."""
        return self.gateway_store_url or f"sqlite:///{(self.home / 'gateway.db').resolve()}"


def load_settings(**overrides: object) -> Settings:
    return Settings(**overrides)
