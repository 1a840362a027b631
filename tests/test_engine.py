"""What stays on screen after an epoch's progress bar is gone."""
from dicefer.engine import epoch_summary


def test_epoch_summary_names_the_stage_the_mi_terms_and_the_speed():
    means = {"loss": -1.5, "mi_global": 0.2, "mi_local": 0.25, "l1_pair": 0.3, "l1_nonpair": 0.5,
             "images_per_s": 74.4, "time_s": 40.0, "l1_active": 1.0}
    line = epoch_summary("stage1", 2, 6, means)
    assert line.startswith("stage1 epoch 3/6:")
    assert "mi_global 0.2" in line and "l1_pair 0.3" in line and "l1_nonpair 0.5" in line
    assert line.endswith("(74 images/s)") and "time_s" not in line and "l1_active" not in line
