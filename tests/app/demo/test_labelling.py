"""The demo's label join lands served traffic, labelled, where a drift-triggered run retrains."""

import pytest

from ctloop.app.demo.labelling import LabelJoin
from ctloop.app.demo.story import LABEL, build_story
from ctloop.snapshot import load_frame, take_snapshot
from ctloop.trainer.validation import validate


@pytest.fixture(scope="module")
def story():
    return build_story()


def test_the_latest_window_lands_labelled_under_the_retrain_prefix_and_validates(story, tmp_path):
    retrain_uri = (tmp_path / "recent" / story.spec.name).as_uri() + "/"
    join = LabelJoin(retrain_uri)
    join.land(story.traffic_before[0])
    landed = join.land(story.traffic_after[0])
    assert landed.startswith(retrain_uri)
    snapshot = take_snapshot(retrain_uri)
    assert len(snapshot.objects) == 1, "only the latest window is kept"
    window = story.traffic_after[0].frame
    assert validate(snapshot, story.spec.data).rows == len(window)
    frame = load_frame(snapshot)
    assert frame["row_id"].tolist() == window["row_id"].tolist()
    assert frame[LABEL].tolist() == window[LABEL].tolist()


def test_a_retrain_uri_that_is_not_a_prefix_is_refused():
    with pytest.raises(ValueError, match="prefix"):
        LabelJoin("file:///tmp/recent/renewals")
