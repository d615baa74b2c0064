"""The label join turns a drifting window's served rows into training data the retrain workflow accepts."""

import json
from datetime import UTC, datetime

import pytest

from ctloop.demo.labelling import GroundTruth, LabelledWindowSink, UnknownRow
from ctloop.demo.story import CATEGORICAL, LABEL, NUMERIC, build_story
from trainer.snapshot import load_frame, take_snapshot
from trainer.validation import validate


def _served(frame) -> list[dict]:
    """Rows as serving logs them: the features, through JSON."""
    return [json.loads(json.dumps(r)) for r in frame[[*NUMERIC, *CATEGORICAL]].to_dict(orient="records")]


@pytest.fixture(scope="module")
def story():
    return build_story()


def test_served_rows_get_their_story_labels(story):
    window = story.traffic_after[0].frame
    truth = GroundTruth([w.frame for w in story.traffic], [*NUMERIC, *CATEGORICAL], LABEL)
    labelled = truth.label_rows(_served(window.head(50)))
    assert labelled[LABEL].tolist() == window[LABEL].head(50).tolist()
    assert labelled["row_id"].tolist() == window["row_id"].head(50).tolist()


def test_a_row_the_story_never_sent_is_an_error_naming_it(story):
    truth = GroundTruth([w.frame for w in story.traffic], [*NUMERIC, *CATEGORICAL], LABEL)
    row = {**_served(story.traffic_after[0].frame.head(1))[0], "usage_hours": 123.0}
    with pytest.raises(UnknownRow, match=r"123\.0"):
        truth.label_rows([row])


def test_the_sink_returns_a_prefix_that_validates_against_the_spec(story, tmp_path):
    window = story.traffic_after[0].frame
    truth = GroundTruth([w.frame for w in story.traffic], [*NUMERIC, *CATEGORICAL], LABEL)
    sink = LabelledWindowSink(tmp_path.as_uri(), truth)
    jsonl = ("\n".join(json.dumps(r) for r in _served(window)) + "\n").encode()
    uri = sink.save_rows(jsonl, model=story.spec.name, window_end=datetime(2026, 1, 1, tzinfo=UTC))
    assert uri.endswith("/") and sink.labelled == [uri]
    snapshot = take_snapshot(uri)
    assert len(snapshot.objects) == 1
    report = validate(snapshot, story.spec.data)
    assert report.rows == len(window)
    assert load_frame(snapshot)[LABEL].tolist() == window[LABEL].tolist()
    # The monitor's own record of the window's rows is kept as it asked.
    assert list((tmp_path / "windows" / story.spec.name).glob("*.jsonl"))
