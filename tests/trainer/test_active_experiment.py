import mlflow

from ctloop.snapshot import take_snapshot
from ctloop.trainer.train import train

from .conftest import make_frame, make_spec


def test_training_ignores_an_active_experiment_left_by_other_code(tmp_path):
    tracking_uri = f"sqlite:///{tmp_path}/mlflow.db"
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment("someone-elses")
    data = tmp_path / "data"
    data.mkdir()
    make_frame(300).to_parquet(data / "part.parquet")
    spec = make_spec()
    result = train(take_snapshot(str(data)), spec, tracking_uri=tracking_uri)
    run = mlflow.MlflowClient(tracking_uri).get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert mlflow.MlflowClient(tracking_uri).get_experiment(run.info.experiment_id).name == spec.name
