"""The command line: clear one-line errors for bad configs, the sample crawl, the deployments."""

import subprocess
import sys

import pytest

from cli.main import main
from flows.config import PRESETS_DIR, ConfigError, load_config, parse_override


def test_wrong_type_in_config_names_the_field():
    with pytest.raises(ConfigError, match=r"train\.pretrain\.depth: Input should be a valid integer"):
        load_config("tiny", parse_override("train.pretrain.depth=deep"))


def test_unknown_field_is_refused():
    with pytest.raises(ConfigError, match=r"train\.pretrain\.dept: Extra inputs are not permitted"):
        load_config("tiny", parse_override("train.pretrain.dept=4"))


def test_bad_config_exits_with_one_line_and_no_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  crawl:\n    num_files: many\n")
    proc = subprocess.run([sys.executable, "-m", "cli.main", "run", "--preset", str(bad)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == [
        "crawl2chat: config error: invalid config bad.yaml: data.crawl.num_files: "
        "Input should be a valid integer, unable to parse string as an integer"]


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ConfigError, match="known: .*tiny"):
        load_config("nope")


@pytest.mark.parametrize("name", sorted(p.stem for p in PRESETS_DIR.glob("*.yaml")))
def test_every_shipped_preset_validates(name):
    load_config(name)


def test_the_small_preset_is_tiny_grown_in_model_world_data_and_steps():
    tiny, small = load_config("tiny"), load_config("small")
    assert small.work_dir != tiny.work_dir  # a small run never lands in tiny's work dir
    assert small.train.pretrain.depth > tiny.train.pretrain.depth
    assert small.train.pretrain.sequence_len > tiny.train.pretrain.sequence_len
    assert small.data.crawl.num_files * small.data.crawl.pages_per_file > \
        tiny.data.crawl.num_files * tiny.data.crawl.pages_per_file
    assert small.data.crawl.towns > tiny.data.crawl.towns and small.data.crawl.people > tiny.data.crawl.people
    for stage in ("sft", "reward", "rlhf"):
        assert getattr(small.train, stage).steps > getattr(tiny.train, stage).steps, stage
    # Pretraining's steps follow from the model (tests/flows/test_presets.py).
    assert small.train.pretrain.tokens_per_param > tiny.train.pretrain.tokens_per_param
    assert set(small.train.preference_tuning) == {"rlhf", "dpo"}  # both compared in one report


def test_sample_crawl_writes_warc_files_and_labels(tmp_path, capsys):
    assert main(["sample-crawl", "--out", str(tmp_path), "--files", "1", "--pages", "10"]) == 0
    assert len(list(tmp_path.glob("*.warc.gz"))) == 1 and (tmp_path / "labels.jsonl").exists()
    assert "10 pages" in capsys.readouterr().out


def test_deployments_cover_pipeline_refresh_and_each_stage_group():
    from deployments.serve import REFRESH_CRON, deployments

    deps = {d.name: d for d in deployments("tiny")}
    assert set(deps) == {"full-pipeline", "data-refresh", "data", "tokenizer", "train", "evaluate", "ablate"}
    assert deps["data-refresh"].schedules[0].schedule.cron == REFRESH_CRON
    assert deps["full-pipeline"].parameters["config"]["data"]["crawl"]["num_files"] == 8
    # The ablation's form: the served preset's base against both controls, to which variants are added.
    ablation = deps["ablate"].parameters["ablation"]
    assert (ablation["preset"], ablation["variants"]) == ("tiny", [])
    assert ablation["controls"]["null_control"] and ablation["controls"]["positive_control"]["enabled"]


def test_run_where_nothing_survives_ends_with_one_line_naming_the_stage(harness_env, tmp_path):
    import yaml

    from tests.support.pipeline import MICRO

    preset = tmp_path / "empty.yaml"
    preset.write_text(yaml.safe_dump({**MICRO, "work_dir": str(tmp_path / "work"),
                                      "data": {**MICRO["data"], "langid": {"languages": ["xx"]}}}))
    proc = subprocess.run([sys.executable, "-m", "cli.main", "run", "--preset", str(preset)],
                          env=harness_env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stdout + proc.stderr
    ours = [line for line in proc.stderr.splitlines() if line.startswith("crawl2chat:")]
    assert len(ours) == 1 and ours[0].startswith("crawl2chat: stage 'data' produced no documents")


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU")
def test_a_device_the_machine_lacks_is_one_line_before_any_work(tmp_path):
    work = tmp_path / "work"
    proc = subprocess.run([sys.executable, "-m", "cli.main", "run", "--work-dir", str(work),
                           "--set", "train.rlhf.device=cuda"], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == [
        "crawl2chat: machine check: train.rlhf.device 'cuda' asks for a GPU, but torch "
        f"{__import__('torch').__version__} sees no CUDA device here"]
    assert not work.exists() or not any(p.is_dir() for p in work.iterdir())  # no stage started


def test_gpus_for_torchrun_are_counted(monkeypatch):
    import torch

    from flows.common import machine_problems

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    config = load_config("tiny", parse_override("train.pretrain.nproc=8"))
    assert machine_problems(config) == ["train.pretrain.nproc is 8, but this machine has 2 GPU(s)"]
    assert machine_problems(load_config("tiny", parse_override("train.sft.device=cuda:3"))) == [
        "train.sft.device 'cuda:3' asks for GPU 3, but this machine has 2"]
    assert machine_problems(load_config("tiny")) == []


def test_a_work_dir_in_use_is_refused_with_one_line_naming_its_holder(tmp_path):
    from tasks.core.lease import hold_work_dir

    work = tmp_path / "work"
    with hold_work_dir(work, label="another run"):
        proc = subprocess.run([sys.executable, "-m", "cli.main", "run", "--work-dir", str(work)],
                              capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith(f"crawl2chat: work dir {work} is in use by pid {__import__('os').getpid()} on host ")
    assert "(another run)" in line
    assert not any(p.is_dir() for p in work.iterdir())  # it wrote nothing


def test_refresh_takes_in_the_crawl_once_and_then_finds_nothing_new(prefect_harness, tmp_path, capsys):
    import yaml

    from tests.support.pipeline import MICRO

    preset = tmp_path / "micro.yaml"
    preset.write_text(yaml.safe_dump({**MICRO, "work_dir": str(tmp_path / "work")}))
    outputs = []
    for _ in range(2):
        assert main(["refresh", "--preset", str(preset)]) == 0
        outputs.append([line for line in capsys.readouterr().out.splitlines()
                        if line.startswith(("crawl2chat:", "  v"))])
    assert outputs[0][0].startswith("crawl2chat: 2 new WARC file(s) taken in, 0 waiting; dataset ")
    assert outputs[0][0].endswith("at version 1") and outputs[0][1].startswith("  v1: ")
    assert outputs[1][0].startswith("crawl2chat: 0 new WARC file(s)") and outputs[1][1:] == outputs[0][1:]


def test_served_deployments_write_to_an_absolute_work_dir_and_an_empty_one_is_refused(tmp_path, monkeypatch):
    from deployments.serve import deployments

    monkeypatch.chdir(tmp_path)
    for d in deployments("tiny", work_dir="runs/a"):
        config = d.parameters.get("config") or d.parameters["ablation"]
        assert config["work_dir"] == str(tmp_path / "runs" / "a")
    with pytest.raises(ConfigError, match="work_dir is empty"):
        load_config("tiny", {"work_dir": ""})
