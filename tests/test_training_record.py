"""pfmvg_training.json: one schema, written and read by pfmvg_plugin.training_record; earlier records still load."""

from __future__ import annotations

import json

import pytest

from pfmvg_plugin.training_record import RECORD_NAME, SCHEMA_VERSION, TrainingRecord, read_training_meta

#: What the recipe wrote before the schema had a version (a real record of an earlier release, trimmed).
VERSION_1 = {"backbone": "llava", "base_model": "runs/stage1/model", "convention": "llava", "box_codec": "llava_pad",
             "image_resize": "pad", "datasets": [{"name": "synthcxr", "split": "train"}], "precision": "fp32",
             "engine": "deepspeed", "zero_stage": 2, "global_step": 600}


def test_an_unversioned_record_of_an_earlier_release_loads(tmp_path):
    (tmp_path / RECORD_NAME).write_text(json.dumps(VERSION_1))
    record = TrainingRecord.read(tmp_path)
    assert record.version == 1 and record.backbone == "llava" and record.image_resize == "pad"
    assert record.extra["global_step"] == 600 and record.extra["zero_stage"] == 2
    assert read_training_meta(tmp_path) == {**VERSION_1, "version": 1, "box_codec_options": None}


def test_the_codec_frame_and_native_resize_round_trip(tmp_path):
    """Version 3: a dynamic-resolution model's codec frame (Qwen2.5-VL's pixel budget) travels with the record."""
    frame = {"min_pixels": 3136, "max_pixels": 12544, "factor": 28}
    TrainingRecord(convention="qwen25vl", box_codec="qwen25vl", box_codec_options=frame, backbone="qwen25vl",
                   image_resize="native").write(tmp_path)
    meta = read_training_meta(tmp_path)
    assert meta["box_codec_options"] == frame and meta["image_resize"] == "native" and meta["version"] == 3
    with pytest.raises(ValueError, match="box_codec_options"):
        TrainingRecord(convention="llava", box_codec_options=[1, 2])


def test_round_trip_writes_the_version(tmp_path):
    record = TrainingRecord(convention="minigptv2", box_codec="minigptv2", backbone="minigptv2",
                            extra={"converted_from": "ckpt.pth"})
    path = record.write(tmp_path)
    data = json.loads(path.read_text())
    assert data["version"] == SCHEMA_VERSION and data["converted_from"] == "ckpt.pth"
    assert TrainingRecord.read(tmp_path) == record
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize(("data", "why"), [
    ([], "expected a JSON object"), ({"backbone": "llava"}, "no prompt convention"),
    ({"convention": "llava", "version": 0}, "not a schema version"),
])
def test_bad_records_name_the_file_and_the_reason(tmp_path, caplog, data, why):
    (tmp_path / RECORD_NAME).write_text(json.dumps(data))
    assert TrainingRecord.read(tmp_path, "pfmvg_llava") is None
    assert why in caplog.text and str(tmp_path / RECORD_NAME) in caplog.text and "pfmvg_llava" in caplog.text
    with pytest.raises(ValueError, match="image_resize"):
        TrainingRecord(convention="llava", image_resize="crop")


def test_a_newer_schema_reads_what_it_knows(tmp_path, caplog):
    (tmp_path / RECORD_NAME).write_text(json.dumps({"convention": "llava", "version": SCHEMA_VERSION + 1,
                                                     "frame": {"kind": "pad"}}))
    record = TrainingRecord.read(tmp_path)
    assert record.convention == "llava" and record.extra == {"frame": {"kind": "pad"}}
    assert "newer than this pfmvg_plugin's" in caplog.text


def test_no_record_is_none(tmp_path):
    assert TrainingRecord.read(tmp_path) is None and read_training_meta(None) == {}
