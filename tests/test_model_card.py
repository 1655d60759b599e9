"""The model card of a real (tiny) `kprep train` run, its refresh by `kprep eval`, and `kprep push`
of the model: exact files, a folder that loads with PEFT, the HfApi calls.

One 2-step LoRA run of the packaged tiny Gemma 4 (checkpoints every step, so
there are `checkpoint-*` folders to leave out) is shared by the module.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil

import pytest
import yaml
from typer.testing import CliRunner

torch = pytest.importorskip("torch")
pytest.importorskip("peft")
pytest.register_assert_rewrite("fake_hub")

from conftest import write_moving_shape_dataset  # noqa: E402
from fake_hub import listing  # noqa: E402

from trainer.tiny import tiny_model_path  # noqa: E402

pytest_plugins = ["fake_hub"]  # fixture: fake_hub
TINY = str(tiny_model_path())
TOKEN = "hf_TestTokenThatMustNeverBePrinted123"
SECTIONS = [
    "What was trained",
    "Training data",
    "How it was trained",
    "Final trainer summary",
    "Training command",
    "Evaluation",
    "Usage",
    "Notes",
]
# Exactly what a push of a LoRA run publishes.
MODEL_UPLOAD = [
    "README.md",
    "adapter_config.json",
    "adapter_model.safetensors",
    "chat_template.jinja",
    "label_map.json",
    "processor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "training_summary.json",
]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def cli(*args, ok: bool = True):
    from trainer.cli import app

    result = CliRunner().invoke(app, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, result.output + repr(result.exception)
    return result


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(data folder, output folder) of `kprep train` on the moving-shape data, 2 steps."""
    root = tmp_path_factory.mktemp("card_run")
    data = write_moving_shape_dataset(root / "data", per_class=1, val_per_class=1)
    out = root / "gemma4-kinetics-lora"
    cli(
        "train", "--model-id", TINY, "--data-path", data / "demo.train.json", "--output-dir", out,
        "--max-steps", "2", "--per-device-train-batch-size", "2",
        "--gradient-accumulation-steps", "1", "--save-steps", "1", "--logging-steps", "1",
        "--optim", "adamw_torch", "--no-bf16", "--no-gradient-checkpointing",
        "--learning-rate", "0.05", "--lora-dropout", "0", "--torch-threads", "1",
    )  # fmt: skip
    return data, out


def predicted(output: str) -> dict:
    """The JSON of `kprep predict --json` (the runner mixes progress bars into the output)."""
    return json.loads(output[output.index('{"source"') :].splitlines()[0])


def split_card(text: str) -> tuple[dict, str]:
    assert text.startswith("---\n")
    _, head, body = text.split("---\n", 2)
    return yaml.safe_load(head), body


def section(body: str, title: str) -> str:
    return body.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def code_block(text: str, lang: str) -> str:
    (block,) = re.findall(rf"```{lang}\n(.*?)```", text, re.S)
    return block


def test_card_has_every_section_and_the_summary_numbers(run):
    from huggingface_hub import ModelCard

    data, out = run
    text = (out / "README.md").read_text()
    summary = json.loads((out / "training_summary.json").read_text())
    meta, body = split_card(text)
    card = ModelCard.load(out / "README.md")
    assert card.data.to_dict()["library_name"] == "peft"
    assert meta["pipeline_tag"] == "image-text-to-text"
    assert {
        "gemma",
        "gemma4",
        "peft",
        "lora",
        "action-recognition",
        "image-sequence",
        "kprep",
    } <= set(meta["tags"])
    assert "base_model" not in meta  # a local base with no recorded Hub id is not invented
    assert "model-index" not in meta
    assert re.findall(r"^## (.*)$", body, re.M) == SECTIONS
    for placeholder in ("More Information Needed", "Model ID", "[More", "TODO", "None |"):
        assert placeholder not in text, placeholder

    what = section(body, "What was trained")
    assert f"| LoRA modules | {summary['lora_modules']} |" in what
    assert f"| text layers | {summary['text_layers']} |" in what
    assert f"| trainable parameters | {summary['trainable_params']} (" in what
    recipe = summary["recipe"]
    assert f"| r / alpha / dropout | {recipe['lora_r']} / {recipe['lora_alpha']} / " in what
    assert "- vision tower: frozen" in what and "- vision -> text projector: frozen" in what

    data_part = section(body, "Training data")
    assert summary["data"]["sha256"] in data_part and str(data / "demo.train.json") in data_part
    assert f"- samples: {summary['data']['samples']}" in data_part
    assert "4 frames per sample" in data_part
    assert "answer form: `The video shows {label}.`" in data_part
    manifest = json.loads((data / "demo.train.json").read_text())
    assert json.loads(code_block(data_part, "json")) == manifest[0]  # exactly as in the manifest

    how = section(body, "How it was trained")
    for row in ("| gradient accumulation | 1 |", "| per-device batch | 2 |",
                "| learning rate | 0.05 |", "| save steps / kept checkpoints | 1 / 2 |",
                "| DeepSpeed | not used |", "| precision | fp32 |", "| scheduler | cosine |",
                f"transformers {summary['versions']['transformers']}"):  # fmt: skip
        assert row in how, row

    final = section(body, "Final trainer summary")
    for label, key in [
        ("final loss", "final_loss"),
        ("mean loss over the run (train_loss)", "train_loss"),
        ("runtime (s)", "train_runtime_s"),
        ("samples/s", "train_samples_per_second"),
        ("steps/s", "train_steps_per_second"),
    ]:
        assert summary[key] is not None
        assert f"| {label} | {summary[key]} |" in final, label
    assert summary["loss_definition"] in final
    assert "| device | cpu" in final

    assert "Not evaluated" in section(body, "Evaluation")
    assert "adapter, not a merged model" in section(body, "Notes")


def test_the_cards_command_reproduces_the_resolved_config(run):
    import typer.main

    from trainer.cli import app
    from trainer.config import TrainConfig

    _, out = run
    summary = json.loads((out / "training_summary.json").read_text())
    body = split_card((out / "README.md").read_text())[1]
    command = section(body, "Training command")
    args = shlex.split(code_block(command, "bash"))
    assert args[:2] == ["kprep", "train"]
    train = typer.main.get_command(app).get_command(None, "train")
    params = train.make_context("train", args[2:]).params
    params.pop("verbose")  # output noise only, not part of the recipe
    config = TrainConfig.from_sources(config_file=params.pop("config"), overrides=params)
    assert config.to_dict() == summary["recipe"]
    assert json.loads(command.split("```json\n")[1].split("```")[0]) == summary["recipe"]


def test_the_cards_usage_snippet_and_predict_line_run(run):
    data, out = run
    body = split_card((out / "README.md").read_text())[1]
    usage = section(body, "Usage")
    scope: dict = {}
    exec(code_block(usage, "python").replace("torch.bfloat16", "torch.float32"), scope)
    assert type(scope["model"]).__name__.startswith("PeftModel")
    line = shlex.split(code_block(usage, "bash"))
    frames = sorted((data / "frames").iterdir())[0]
    result = cli(*[str(frames) if a == "clip.mp4" else a for a in line[1:]], "--json")
    assert predicted(result.output)["num_frames"] == 4


def test_resolve_base_model_from_flag_hub_id_config_or_cache_path(tmp_path):
    from kinetics_prep.model_card import resolve_base_model

    local = str(tmp_path)
    cache = f"{tmp_path}/hub/models--google--gemma-4-e4b-it/snapshots/0123abcd"
    assert (
        resolve_base_model(local, base_model_id="google/gemma-4-e4b-it") == "google/gemma-4-e4b-it"
    )
    assert resolve_base_model("google/gemma-4-e4b-it") == "google/gemma-4-e4b-it"
    assert resolve_base_model(local, config={"_name_or_path": "google/gemma-4-e2b-it"}) == (
        "google/gemma-4-e2b-it"
    )
    assert resolve_base_model(local, config={"_name_or_path": local}) is None
    assert resolve_base_model(cache) == "google/gemma-4-e4b-it"
    assert resolve_base_model(local) is None


def test_eval_refreshes_the_card_with_results_and_model_index(run, tmp_path):
    data, trained = run
    out = tmp_path / trained.name
    shutil.copytree(trained, out, ignore=shutil.ignore_patterns("checkpoint-*"))
    before = (out / "README.md").read_text()
    cli(
        "eval", "--data-path", data / "demo.validation.json", "--model-id", TINY,
        "--adapter", out, "--frame-order", "normal", "--frame-order", "reversed",
        "--max-new-tokens", "4", "--torch-threads", "1",
    )  # fmt: skip
    report = json.loads((out / "eval_report.json").read_text())
    meta, body = split_card((out / "README.md").read_text())
    assert split_card(before)[1].split("## Evaluation")[0] == body.split("## Evaluation")[0]
    evaluation = section(body, "Evaluation")
    assert "Not evaluated" not in evaluation
    (index,) = meta["model-index"]
    metrics = {m["name"]: m["value"] for m in index["results"][0]["metrics"]}
    (normal,) = [r for r in report["runs"] if r["frame_order"] == "normal"]
    (reversed_,) = [r for r in report["runs"] if r["frame_order"] == "reversed"]
    assert metrics["top-1 accuracy (generation)"] == normal["generation"]["top1"]
    assert metrics["top-1 accuracy (ranking, frames reversed)"] == reversed_["ranking"]["top1"]
    k = normal["ranking"]["top_k"]  # capped at the number of labels (issue 12)
    assert metrics[f"top-{k} accuracy (ranking)"] == normal["ranking"][f"top{k}"]
    assert f"| fine-tuned | reversed | {reversed_['num_samples']} |" in evaluation


def test_dry_run_holds_only_final_artifacts_and_loads_with_peft(run, tmp_path):
    from huggingface_hub import ModelCard
    from peft import PeftModel, get_peft_model_state_dict
    from safetensors.torch import load_file
    from transformers import Gemma4ForConditionalGeneration

    _, trained = run
    assert sorted(p.name for p in trained.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    assert (trained / "training_args.bin").is_file()
    upload = tmp_path / "upload"
    result = cli(
        "push", trained, "me/gemma4-kinetics-lora", "--dry-run", upload,
        "--base-model-id", "google/gemma-4-e4b-it",
    )  # fmt: skip
    assert "dry run: 9 files (model:" in " ".join(result.output.split())
    assert listing(upload) == MODEL_UPLOAD  # no checkpoint-*, training_args.bin, optimizer
    model = PeftModel.from_pretrained(Gemma4ForConditionalGeneration.from_pretrained(TINY), upload)
    saved = load_file(trained / "adapter_model.safetensors")
    loaded = get_peft_model_state_dict(model)
    assert sorted(loaded) == sorted(saved) and saved
    assert all(torch.equal(loaded[k], saved[k]) for k in saved)

    card = ModelCard.load(upload / "README.md")
    meta = card.data.to_dict()
    assert meta["base_model"] == "google/gemma-4-e4b-it" and meta["license"] == "apache-2.0"
    usage = section(card.text, "Usage")
    assert 'PeftModel.from_pretrained(base, "me/gemma4-kinetics-lora")' in usage
    assert 'from_pretrained("google/gemma-4-e4b-it"' in usage
    line = code_block(usage, "bash").splitlines()
    assert line[0] == "hf download me/gemma4-kinetics-lora --local-dir gemma4-kinetics-lora"
    args = shlex.split(line[1])
    assert args[args.index("--label-map") + 1] == "gemma4-kinetics-lora/label_map.json"
    assert args[args.index("--prompt") + 1].startswith("Please analyze the sequence")
    # the folder's own card (for the local folder) is not changed by a push
    assert "me/gemma4-kinetics-lora" not in (trained / "README.md").read_text()


def test_the_pushed_predict_line_runs_from_the_downloaded_folder_alone(run, tmp_path, monkeypatch):
    data, trained = run
    folder = tmp_path / "gemma4-kinetics-lora"  # what `hf download ... --local-dir` gives
    cli("push", trained, "me/gemma4-kinetics-lora", "--dry-run", folder)
    card = (folder / "README.md").read_text()
    args = shlex.split(code_block(section(card, "Usage"), "bash").splitlines()[1])
    assert args[args.index("--model-id") + 1] == TINY  # no Hub id known: the base used
    frames = tmp_path / "clip_frames"
    shutil.copytree(sorted((data / "frames").iterdir())[0], frames)
    monkeypatch.chdir(tmp_path)
    hidden = data.with_name("data-moved")
    data.rename(hidden)  # the training data is not needed
    try:
        result = cli(*[str(frames) if a == "clip.mp4" else a for a in args[1:]], "--json")
    finally:
        hidden.rename(data)
    assert predicted(result.output)["num_frames"] == 4


def test_dry_run_failure_leaves_no_folder(run, tmp_path):
    _, trained = run
    broken = tmp_path / "broken"
    shutil.copytree(trained, broken, ignore=shutil.ignore_patterns("checkpoint-*"))
    (broken / "training_summary.json").write_text("{not json")
    result = cli("push", broken, "me/x", "--dry-run", tmp_path / "up", ok=False)
    assert result.exit_code == 2 and "not valid JSON" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken"]  # no partial folder


@pytest.mark.parametrize("existing", [None, "kprep", "foreign"])
def test_model_push_at_the_hfapi_boundary(run, tmp_path, fake_hub, existing, caplog):
    _, trained = run
    if existing:
        tags = ["kprep", "lora"] if existing == "kprep" else ["mine"]
        fake_hub.add_repo(
            "model", "me/lora", private=False, tags=tags,
            files=[".gitattributes", "README.md", "adapter_model.safetensors"],
        )  # fmt: skip
    result = cli("push", trained, "me/lora", "--token", TOKEN, ok=existing != "foreign")
    assert TOKEN not in result.output and TOKEN not in caplog.text
    if existing == "foreign":
        assert result.exit_code == 2 and "--overwrite" in result.output
        assert fake_hub.kinds() == ["init", "repo_info"]
        return
    upload = fake_hub.call("upload_folder")
    assert upload["repo_type"] == "model" and upload["repo_id"] == "me/lora"
    assert listing(fake_hub.uploaded) == MODEL_UPLOAD
    assert fake_hub.call("init") == {"token": TOKEN, "library_name": "kprep"}
    if existing is None:
        assert fake_hub.call("create_repo") == {
            "repo_id": "me/lora", "repo_type": "model", "private": True, "exist_ok": False
        }  # fmt: skip
        assert upload["delete_patterns"] is None
        assert "(private)" in result.output
    else:
        assert "create_repo" not in fake_hub.kinds()
        assert upload["delete_patterns"] == ["*.safetensors", "*.safetensors.index.json"]
        assert "(public)" in result.output
    dry = tmp_path / "dry"
    cli("push", trained, "me/lora", "--dry-run", dry)
    assert (dry / "README.md").read_text() == (fake_hub.uploaded / "README.md").read_text()
    assert not [p for p in trained.parent.iterdir() if p.name.startswith(".kprep-push-")]


def test_push_tells_what_a_folder_is(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    result = cli("push", tmp_path, "me/x", "--dry-run", tmp_path / "up", ok=False)
    assert result.exit_code == 2
    assert "neither a saved Arrow dataset" in " ".join(result.output.split())


@pytest.mark.parametrize(
    "env, tail",
    [({}, ["--no-bf16"]), ({"WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "4"}, ["--num-gpus", "4"]),
     ({"WORLD_SIZE": "16", "LOCAL_WORLD_SIZE": "8"}, ["--no-bf16"])],
)  # fmt: skip
def test_reproduce_command_lists_changed_settings_and_a_launchers_gpus(monkeypatch, env, tail):
    from trainer.card import reproduce_command
    from trainer.config import TrainConfig

    for key in ("WORLD_SIZE", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    args = reproduce_command(TrainConfig(data_path="d.json", max_steps=5, bf16=False))
    assert args[:6] == ["kprep", "train", "--data-path", "d.json", "--max-steps", "5"]
    assert args[-len(tail) :] == tail


def test_a_merged_folder_is_pushed_as_a_plain_model(run, tmp_path):
    """`kprep merge` output (config.json + model.safetensors, no adapter): card re-rendered
    for a transformers model; the stand-in weights file is copied byte for byte."""
    from kinetics_prep.publish import dry_run, folder_kind

    _, trained = run
    merged = tmp_path / "merged"
    merged.mkdir()
    for name in ("training_summary.json", "tokenizer.json", "processor_config.json"):
        shutil.copy2(trained / name, merged / name)
    (merged / "config.json").write_text("{}")
    (merged / "model.safetensors").write_bytes(b"weights")
    (merged / "optimizer.pt").write_bytes(b"state")
    assert folder_kind(merged) == "model"
    kind, staged = dry_run(merged, tmp_path / "up", repo_id="me/merged")
    assert kind == "model"
    assert [p.name for p in staged.files] == [
        "README.md", "config.json", "model.safetensors", "processor_config.json",
        "tokenizer.json", "training_summary.json",
    ]  # fmt: skip
    assert (tmp_path / "up" / "model.safetensors").read_bytes() == b"weights"
    meta, body = split_card((tmp_path / "up" / "README.md").read_text())
    assert meta["library_name"] == "transformers" and "merged" in meta["tags"]
    assert 'Gemma4ForConditionalGeneration.from_pretrained("me/merged"' in body
    assert "PeftModel" not in body
