"""`kprep merge`: merged safetensors equal base + adapter; a model card with YAML metadata."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner


def _logits(model, processor, data):
    import torch

    from trainer.collator import VisionChatCollator
    from trainer.data import ConversationDataset, load_samples

    item = ConversationDataset(load_samples(data / "demo.validation.json", max_samples=1))[0]
    batch = VisionChatCollator(processor)([item])
    batch.pop("labels")
    with torch.no_grad():
        return model(**batch).logits


def test_kprep_merge_equals_adapter_and_writes_card(tiny_lora_run, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoProcessor, Gemma4ForConditionalGeneration

    from trainer.cli import app

    data, adapter, base = tiny_lora_run
    report = tmp_path / "eval.json"
    runner = CliRunner()
    ev = runner.invoke(
        app,
        ["eval", "--data-path", str(data / "demo.validation.json"), "--model-id", str(base),
         "--adapter", str(adapter), "--frame-order", "normal", "--frame-order", "reversed",
         "--max-new-tokens", "4", "--output", str(report)],
    )  # fmt: skip
    assert ev.exit_code == 0, ev.output
    out = tmp_path / "merged"
    result = runner.invoke(
        app,
        ["merge", "--adapter", str(adapter), "--output", str(out), "--eval-report", str(report)],
    )
    assert result.exit_code == 0, result.output
    assert (out / "model.safetensors").is_file()
    assert not list(out.glob("adapter_*"))
    assert (out / "processor_config.json").is_file()

    merged = Gemma4ForConditionalGeneration.from_pretrained(str(out)).eval()
    processor = AutoProcessor.from_pretrained(str(out))
    peft = PeftModel.from_pretrained(
        Gemma4ForConditionalGeneration.from_pretrained(str(base)), str(adapter)
    ).eval()
    plain = Gemma4ForConditionalGeneration.from_pretrained(str(base)).eval()
    got, want, before = (_logits(m, processor, data) for m in (merged, peft, plain))
    assert torch.allclose(got, want, atol=1e-4)
    assert not torch.allclose(got, before, atol=1e-4)  # the adapter did change the model

    import yaml

    card = (out / "README.md").read_text()
    meta = yaml.safe_load(card.split("---\n")[1])
    assert "base_model" not in meta  # the tiny base has no Hub id to name
    assert meta["library_name"] == "transformers"  # merged: a plain model, not a PEFT adapter
    assert "merged" in meta["tags"] and "lora" not in meta["tags"]
    assert "model-index" in meta
    summary = json.loads((adapter / "training_summary.json").read_text())
    assert f"| samples/s | {summary['train_samples_per_second']} |" in card
    assert f"| r / alpha / dropout | {summary['recipe']['lora_r']} /" in card
    assert summary["data"]["sha256"] in card
    assert "| fine-tuned | reversed | 4 |" in card
    assert "top-1 accuracy (generation, frames reversed)" in card
    assert f'Gemma4ForConditionalGeneration.from_pretrained("{out}"' in card
    assert "PeftModel" not in card


def test_kprep_merge_without_eval_and_errors(tiny_lora_run, tmp_path):
    from trainer.cli import app

    _, adapter, _ = tiny_lora_run
    runner = CliRunner()
    out = tmp_path / "m"
    ok = runner.invoke(app, ["merge", "--adapter", str(adapter), "--output", str(out)])
    assert ok.exit_code == 0, ok.output
    card = (out / "README.md").read_text()
    assert "model-index" not in card and "Not evaluated" in card
    again = runner.invoke(app, ["merge", "--adapter", str(adapter), "--output", str(out)])
    assert again.exit_code == 2 and "--overwrite" in again.output
    bad = runner.invoke(
        app, ["merge", "--adapter", str(tmp_path / "none"), "--output", str(tmp_path / "x")]
    )
    assert bad.exit_code == 2 and "is not a folder" in bad.output
    (tmp_path / "r.json").write_text("{}")
    no_runs = runner.invoke(
        app,
        ["merge", "--adapter", str(adapter), "--output", str(tmp_path / "y"), "--eval-report",
         str(tmp_path / "r.json")],
    )  # fmt: skip
    assert no_runs.exit_code == 2 and "not a kprep eval report" in no_runs.output


@pytest.mark.parametrize("value", ["abc/def", 'a "quoted": name/x'])
def test_card_yaml_holds_any_base_model_id(value):
    import yaml

    from kinetics_prep.model_card import render_model_card

    card = render_model_card({"model_id": "/local/copy"}, base_model_id=value, location="out")
    assert yaml.safe_load(card.split("---\n")[1])["base_model"] == value
