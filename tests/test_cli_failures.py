"""Issue 12: every command fails cleanly (one line, exit 2), never writes over an input,
checks its outputs before working, and never reports success for a run that did nothing.

Each test drives the real `kprep` app (``trainer.cli.app``) through Typer's CliRunner,
or a subprocess where the interpreter itself must differ (no torch installed).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kinetics_prep.schema import LABEL_MAP_NAME, write_label_map
from trainer.cli import app
from trainer.tiny import tiny_model_path, write_synthetic_manifest

runner = CliRunner()
TINY = str(tiny_model_path())
REPO = Path(__file__).resolve().parents[1]


def _one_line_error(result, *needles: str) -> str:
    """Exit 2, no traceback, one `error:` line holding every needle."""
    out = result.output
    assert result.exit_code == 2, out
    assert result.exception is None or isinstance(result.exception, SystemExit), out
    assert "Traceback" not in out, out
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, out
    for needle in needles:
        assert needle in errors[0], out
    return errors[0]


@pytest.fixture
def csv_file(tmp_path) -> Path:
    path = tmp_path / "ann.csv"
    path.write_text(
        "label,youtube_id,time_start,time_end,split\n"
        "tai chi,aaaaaaaaaaa,0,10,val\n"
        "tai chi,bbbbbbbbbbb,0,10,val\n"
        "juggling balls,ccccccccccc,0,10,val\n",
        encoding="utf-8",
    )
    return path


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("data")
    path = write_synthetic_manifest(folder, num_samples=4, size=32)
    write_label_map(path.with_name(LABEL_MAP_NAME), ["moving left", "moving right"])
    return path


# ---------------------------------------------------------------- output paths, before any work


@pytest.mark.parametrize(
    "make_output, needle",
    [
        (lambda tmp, csv: tmp / "folder", "refusing to replace it"),  # kinetics_prep.outputs
        (lambda tmp, csv: csv / "out.csv", "sits under a file"),
        (lambda tmp, csv: csv, "is the --annotations file"),
        (lambda tmp, csv: Path("/proc/kprep/out.csv"), "not writable"),
    ],
    ids=["folder", "under-file", "is-input", "read-only"],
)
def test_subset_output_checked_before_work(tmp_path, csv_file, make_output, needle):
    (tmp_path / "folder").mkdir()
    before = csv_file.read_bytes()
    output = make_output(tmp_path, csv_file)
    result = runner.invoke(app, ["subset", "--annotations", str(csv_file), "-o", str(output)])
    _one_line_error(result, "--output", needle)
    assert csv_file.read_bytes() == before


def test_download_output_dir_that_is_a_file(tmp_path, csv_file):
    target = tmp_path / "clips_here"
    target.write_text("mine", encoding="utf-8")
    result = runner.invoke(
        app, ["download", "--annotations", str(csv_file), "--output-dir", str(target)]
    )
    _one_line_error(result, "--output-dir", "not a folder")
    assert target.read_text(encoding="utf-8") == "mine"


def test_build_manifest_output_under_a_file(tmp_path):
    (tmp_path / "frames").mkdir()
    blocker = tmp_path / "blocker"
    blocker.write_text("x", encoding="utf-8")
    result = runner.invoke(
        app,
        [
            "build-manifest",
            "--frames-dir",
            str(tmp_path),
            "--output",
            str(blocker / "kinetic_3K.json"),
        ],
    )
    _one_line_error(result, "--output", "sits under a file")


def test_push_dry_run_into_a_file(tmp_path):
    target = tmp_path / "staged"
    target.write_text("mine", encoding="utf-8")
    dataset = tmp_path / "k_arrow"
    dataset.mkdir()
    result = runner.invoke(app, ["push", str(dataset), "me/x", "--dry-run", str(target)])
    _one_line_error(result, "--dry-run", "not a folder")
    assert target.read_text(encoding="utf-8") == "mine"


@pytest.mark.parametrize("which", ["manifest", "label_map", "folder"])
def test_eval_output_is_checked_before_evaluating(manifest, tmp_path, which):
    pytest.importorskip("torch")
    label_map = manifest.with_name("label_map.json")
    target = {"manifest": manifest, "label_map": label_map, "folder": tmp_path}[which]
    before = {p: p.read_bytes() for p in (manifest, label_map)}
    result = runner.invoke(
        app,
        ["eval", "--data-path", str(manifest), "--model-id", TINY, "-o", str(target)],
    )
    _one_line_error(result, "--output")
    assert "evaluat" not in result.output.split("error:")[0].lower()
    assert {p: p.read_bytes() for p in before} == before


def test_merge_output_equal_to_adapter_is_refused(tmp_path):
    pytest.importorskip("torch")
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}", encoding="utf-8")
    result = runner.invoke(app, ["merge", "--adapter", str(adapter), "--output", str(adapter)])
    _one_line_error(result, "--output", "--adapter")
    assert (adapter / "adapter_config.json").read_text(encoding="utf-8") == "{}"


def test_train_output_dir_holding_the_data_is_refused(manifest):
    pytest.importorskip("torch")
    readme = manifest.parent / "README.md"
    readme.write_text("my notes", encoding="utf-8")
    result = runner.invoke(
        app,
        [
            "train",
            "--model-id",
            TINY,
            "--data-path",
            str(manifest),
            "--output-dir",
            str(manifest.parent),
        ],
    )
    _one_line_error(result, "--output-dir", "--data-path")
    assert readme.read_text(encoding="utf-8") == "my notes"


def test_demo_output_dir_that_is_a_file(tmp_path):
    pytest.importorskip("torch")
    target = tmp_path / "demo"
    target.write_text("mine", encoding="utf-8")
    result = runner.invoke(app, ["demo", "--output-dir", str(target)])
    _one_line_error(result, "--output-dir", "not a folder")


# ---------------------------------------------------------------- data-only install

_KPREP = "import sys; from trainer.cli import main; sys.argv = ['kprep', *sys.argv[1:]]; main()"
_NO_TORCH = (
    "import sys; sys.modules['torch'] = None; "
    "from trainer.cli import main; sys.argv = ['kprep', *sys.argv[1:]]; main()"
)


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--model-id", "m", "--data-path", "d.json", "--output-dir", "OUT/run"],
        ["eval", "--model-id", "m", "--data-path", "d.json"],
        ["predict", "clip.mp4"],
        ["merge", "--adapter", "a", "--output", "OUT/merged"],
        ["demo", "--output-dir", "OUT/demo"],
    ],
    ids=lambda argv: argv[0],
)
def test_data_only_install_names_the_training_extra(tmp_path, argv):
    argv = [a.replace("OUT", str(tmp_path)) for a in argv]
    proc = subprocess.run(
        [sys.executable, "-c", _NO_TORCH, *argv],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "300"},
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "pip install -e '.[train]'" in proc.stderr, proc.stderr
    assert "torch" in proc.stderr


# ---------------------------------------------------------------- one line instead of a traceback


def test_malformed_yaml_config_is_one_line(tmp_path, manifest):
    pytest.importorskip("torch")
    config = tmp_path / "recipe.yaml"
    config.write_text("model_id: [unclosed\nlearning_rate: 1e-4\n", encoding="utf-8")
    result = runner.invoke(
        app, ["train", "--config", str(config), "--output-dir", str(tmp_path / "run")]
    )
    _one_line_error(result, "recipe.yaml", "not valid YAML", "line")


@pytest.mark.parametrize(
    "command, model", [("train", "missing-folder"), ("train", "hub-offline"), ("eval", "hub-offline")]
)
def test_missing_or_unreachable_model_id_is_one_line(tmp_path, manifest, command, model):
    """A subprocess: the Hub's offline switch is read once, when huggingface_hub is imported."""
    pytest.importorskip("torch")
    model_id = str(tmp_path / "no" / "such") if model == "missing-folder" else "kprep-test/absent"
    argv = [command, "--model-id", model_id, "--data-path", str(manifest)]
    if command == "train":
        argv += ["--output-dir", str(tmp_path / "run"), "--max-steps", "1"]
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),  # an empty cache
        "COLUMNS": "400",
    }
    proc = subprocess.run(
        [sys.executable, "-c", _KPREP, *argv],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "--model-id" in errors[0] and model_id in errors[0], proc.stderr
    assert ("no such folder" in errors[0]) == (model == "missing-folder"), errors[0]
    assert not (tmp_path / "run" / "training_summary.json").exists()


def test_predict_bad_frames_and_short_side_are_one_line(tmp_path):
    pytest.importorskip("torch")
    frames = tmp_path / "frames" / "clip"
    frames.mkdir(parents=True)
    for k in range(1, 5):
        (frames / f"frame_{k}.jpg").write_text("not a jpeg", encoding="utf-8")
    labels = tmp_path / LABEL_MAP_NAME
    write_label_map(labels, ["moving left", "moving right"])
    base = ["predict", str(frames), "--model-id", TINY, "--label-map", str(labels)]
    result = runner.invoke(app, base)
    _one_line_error(result, "frame_1.jpg", "not a readable image")
    result = runner.invoke(app, [*base, "--short-side", "0"])
    _one_line_error(result, "--short-side (0)")


# ---------------------------------------------------------------- Ctrl-C


def _interrupt(*args, **kwargs):
    raise KeyboardInterrupt


@pytest.mark.parametrize("command", ["extract", "train", "demo"])
def test_ctrl_c_is_one_line_and_exit_130(tmp_path, manifest, monkeypatch, command):
    if command == "extract":
        import kinetics_prep.extract as target

        monkeypatch.setattr(target, "extract_clips", _interrupt)
        (tmp_path / "clips").mkdir()
        argv = ["extract", "--clips", str(tmp_path / "clips"), "--output-dir", str(tmp_path / "o")]
    elif command == "train":
        pytest.importorskip("torch")
        import trainer.train as target

        monkeypatch.setattr(target, "train", _interrupt)
        argv = ["train", "--model-id", TINY, "--data-path", str(manifest)]
        argv += ["--output-dir", str(tmp_path / "run")]
    else:
        pytest.importorskip("torch")
        import trainer.demo as target

        monkeypatch.setattr(target, "run_demo", _interrupt)
        argv = ["demo", "--output-dir", str(tmp_path / "demo")]
    result = runner.invoke(app, argv)
    assert result.exit_code == 130, result.output
    assert "Traceback" not in result.output
    assert "interrupted; rerun to resume" in result.output


# ---------------------------------------------------------------- silent results


def _validate(tmp_path, payload):
    path = tmp_path / "m.json"
    path.write_text(json.dumps(payload), encoding="utf-8")
    write_label_map(tmp_path / LABEL_MAP_NAME, ["tai chi"])
    return runner.invoke(app, ["validate", str(path), "--json"])


def test_validate_fails_an_empty_manifest(tmp_path):
    result = _validate(tmp_path, [])
    assert result.exit_code == 1, result.output
    assert json.loads(result.output)["counts"] == {"no samples": 1}


def test_validate_fails_a_sample_without_images(tmp_path):
    sample = {
        "id": "a",
        "messages": [
            {"role": "user", "content": "What is happening?"},
            {"role": "assistant", "content": "The video shows tai chi."},
        ],
    }
    result = _validate(tmp_path, [sample])
    assert result.exit_code == 1, result.output
    assert "no images or video" in json.loads(result.output)["counts"]


def test_extract_bounds_num_frames_up_front(tmp_path):
    (tmp_path / "clips").mkdir()
    result = runner.invoke(
        app,
        ["extract", "--clips", str(tmp_path / "clips"), "--output-dir", str(tmp_path / "o"),
         "--num-frames", "100000"],
    )  # fmt: skip
    _one_line_error(result, "--num-frames (100000)", "256")
    assert not (tmp_path / "o").exists()


def test_extract_warns_on_unmatched_annotations_and_fails_when_nothing_extracted(
    tmp_path, csv_file, make_counter_clip
):
    clips = tmp_path / "clips"
    clips.mkdir()
    make_counter_clip("clips/zzzzzzzzzzz_000000_000010.mp4", num_frames=20)
    out = tmp_path / "o"
    argv = ["extract", "--clips", str(clips), "--output-dir", str(out), "--workers", "1"]
    result = runner.invoke(app, [*argv, "--annotations", str(csv_file)])
    assert result.exit_code == 0, result.output
    assert "matches none of the 1 clips" in result.output

    (clips / "broken_000000_000010.mp4").write_bytes(b"not a video" * 20)
    (clips / "zzzzzzzzzzz_000000_000010.mp4").unlink()
    result = runner.invoke(app, [*argv, "--output-dir", str(tmp_path / "o2")])
    assert result.exit_code == 1, result.output
    assert "no clip of this run was extracted" in result.output


def test_messages_with_brackets_survive_rich(tmp_path, csv_file):
    """Rich markup must not eat `[train]`-like text in paths or messages."""
    out = tmp_path / "[train]" / "sub.csv"
    result = runner.invoke(app, ["subset", "--annotations", str(csv_file), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "[train]" in result.output


def test_subset_empty_classes_file_is_an_error(tmp_path, csv_file):
    classes = tmp_path / "classes.txt"
    classes.write_text("# none yet\n\n", encoding="utf-8")
    out = tmp_path / "sub.csv"
    result = runner.invoke(
        app,
        ["subset", "--annotations", str(csv_file), "-o", str(out), "--classes-file", str(classes)],
    )
    _one_line_error(result, "--classes-file", "names no class")
    assert not out.exists()
