"""Faces keep their track ids through a stream: matched by box overlap one to one, new people get
new ids, a track ends after `patience` frames without its face, and smoothing averages a track's
last frames."""
import numpy as np
import pytest

from dicefer.inference.recognizer import Face
from dicefer.inference.tracks import Tracker, box_overlap

CLASSES = ("happy", "sad")


def face(x: int, y: int = 0, happy: float = 0.5, side: int = 40) -> Face:
    p = {"happy": happy, "sad": 1 - happy}
    return Face((x, y, side, side), max(p, key=p.get), p)


def test_box_overlap_by_hand():
    iou = box_overlap([(0, 0, 10, 10)], [(5, 0, 10, 10), (20, 20, 5, 5), (0, 0, 10, 10)])
    assert iou == pytest.approx(np.array([[50 / 150, 0, 1]]))
    assert box_overlap([], [(0, 0, 1, 1)]).shape == (0, 1)


def test_two_people_keep_their_ids_while_they_move_in_whatever_order_they_are_listed():
    tracker = Tracker()
    ids = [f.track for f in tracker.update([face(0), face(200)])]
    assert ids == [1, 2]
    for step in range(1, 6):
        a, b = face(5 * step), face(200 - 5 * step)
        assert [f.track for f in tracker.update([b, a])] == [2, 1]


def test_a_new_face_gets_a_new_id_and_a_lost_track_ends_after_its_patience():
    tracker = Tracker(patience=2)
    assert [f.track for f in tracker.update([face(0)])] == [1]
    assert [f.track for f in tracker.update([face(2), face(300)])] == [1, 2]
    for _ in range(2):  # person 1 hidden for 2 frames: within patience
        tracker.update([face(300)])
    assert [f.track for f in tracker.update([face(2), face(300)])] == [1, 2]
    for _ in range(3):  # hidden for 3 frames: the track ends
        tracker.update([face(300)])
    assert [f.track for f in tracker.update([face(2), face(300)])] == [3, 2]


def test_boxes_that_barely_overlap_are_different_people():
    tracker = Tracker(min_overlap=0.3)
    tracker.update([face(0)])
    assert tracker.update([face(35)])[0].track == 2  # IoU 5/75 < 0.3


def test_smoothing_averages_the_last_frames_and_relabels():
    tracker = Tracker(window=3)
    probs = [0.9, 0.8, 0.1, 0.2]
    out = [tracker.update([face(0, happy=p)])[0] for p in probs]
    assert out[2].probabilities["happy"] == pytest.approx(np.mean([0.9, 0.8, 0.1]))
    assert out[2].label == "happy"  # one sad frame does not flip the label
    assert out[3].probabilities["happy"] == pytest.approx(np.mean([0.8, 0.1, 0.2]))
    assert out[3].label == "sad"
    unsmoothed = Tracker().update([face(0, happy=0.1)])[0]
    assert unsmoothed.probabilities == face(0, happy=0.1).probabilities


def test_bad_settings_are_refused():
    for kwargs in ({"min_overlap": 0}, {"patience": -1}, {"window": 0}):
        with pytest.raises(ValueError):
            Tracker(**kwargs)
