from pathlib import Path

from ctloop.settings import Settings


def test_embedded_default_needs_no_configuration(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = Settings()
    assert s.bus == "embedded"
    assert s.engine == "local"
    assert s.home == Path(".ctloop")
    assert s.tracking_uri == f"sqlite:///{tmp_path / '.ctloop' / 'mlflow.db'}"
    assert s.state_db == tmp_path / ".ctloop" / "state.db"


def test_environment_uses_the_ctloop_prefix_and_double_underscore_nesting(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CTLOOP_BUS", "kafka")
    monkeypatch.setenv("CTLOOP_KAFKA_BOOTSTRAP", "127.0.0.1:1234")
    monkeypatch.setenv("CTLOOP_ARGO__NAMESPACE", "ml")
    monkeypatch.setenv("CTLOOP_TOPICS__DATA", "arrivals")
    s = Settings()
    assert (s.bus, s.kafka_bootstrap, s.argo.namespace, s.topics.data) == ("kafka", "127.0.0.1:1234", "ml", "arrivals")


def test_ctloop_toml_is_read_and_the_environment_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ctloop.toml").write_text(
        'engine = "argo"\nmlflow_tracking_uri = "http://mlflow:5000"\n[gpu]\ngpus = 2\n'
    )
    monkeypatch.setenv("CTLOOP_ENGINE", "local")
    s = Settings()
    assert s.engine == "local"
    assert s.tracking_uri == "http://mlflow:5000"
    assert s.gpu.gpus == 2
