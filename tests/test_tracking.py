"""MLflow logging of a study (issue 21), against a real local MLflow store read back with MlflowClient."""

import pytest

from bench.report.tracking import log_study
from bench.store.records import load_records
from bench.study.runner import run_study
from tests.helpers import tiny_study

mlflow = pytest.importorskip("mlflow")


def test_every_cell_is_a_run_with_its_config_metrics_history_and_the_report(tmp_path, cache_dir):
    from mlflow.tracking import MlflowClient

    results = str(tmp_path / "results")
    run_study(tiny_study("tracked", timing={"latency": False}, train={"epochs": 2}), results)
    records = load_records(results, "tracked")
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "summary.md").write_text("# tracked\n")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"  # a real local store (MLflow's file store is deprecated)
    artifacts = (tmp_path / "artifacts").as_uri()
    ids = log_study(uri, "tracked", records, str(reports), artifacts)
    assert set(ids) == {r["row"]["config_hash"] for r in records}
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("tracked")
    for record in records:
        run = client.get_run(ids[record["row"]["config_hash"]])
        assert (
            run.data.params["model"] == record["cell"]["model"] and run.data.tags["config_hash"] == record["row"]["config_hash"]
        )
        assert run.data.metrics["acc_mean"] == pytest.approx(float(record["row"]["acc_mean"]))
        if record["history"]:
            history = client.get_metric_history(run.info.run_id, "val_acc")
            assert [m.step for m in history] == [1, 2] and history[-1].value == pytest.approx(record["history"][-1]["val_acc"])
            assert run.data.params["train.epochs"] == "2"
    (parent,) = client.search_runs([experiment.experiment_id], filter_string="tags.slimbench_kind = 'study'")
    assert [a.path for a in client.list_artifacts(parent.info.run_id, "report")] == ["report/summary.md"]
    again = log_study(uri, "tracked", records, str(reports), artifacts)  # a second logging adds no run
    assert again == ids
    assert len(client.search_runs([experiment.experiment_id], filter_string="tags.slimbench_kind = 'cell'")) == len(records)
