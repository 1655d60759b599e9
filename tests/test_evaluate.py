"""`kprep eval`: the normaliser, the frame-order control, exact batched scoring, reports."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from trainer.evaluate import (
    AnswerMatcher,
    EvalConfig,
    EvalError,
    frame_permutation,
    markdown_table,
    normalize_answer,
    summarize,
)

LABELS = ["moving left", "moving right", "moving up", "moving down", "air drumming"]
TEMPLATE = "The video shows {label}."


@pytest.mark.parametrize(
    ("answer", "label"),
    [
        ("The video shows moving left.", "moving left"),
        ("  the VIDEO shows   moving left ", "moving left"),
        ("The video shows air_drumming.", "air drumming"),
        ("moving up", "moving up"),  # the bare label
        ('"Moving down."', "moving down"),
        ("The video shows moving.", None),  # partial
        ("The video shows moving left quickly.", None),  # extra words
        ("The video shows abseiling.", None),  # not a label
        ("", None),
        (None, None),
    ],
)
def test_answer_matcher_is_exact_after_normalising(answer, label):
    assert AnswerMatcher(LABELS, TEMPLATE).match(answer) == label


def test_normalize_answer_and_bad_template():
    assert normalize_answer("  A  b_C. ") == "a b c"
    with pytest.raises(EvalError, match="must contain"):
        AnswerMatcher(LABELS, "The video shows it.")


def test_frame_permutation_controls():
    assert frame_permutation(4, "normal") == [0, 1, 2, 3]
    assert frame_permutation(4, "reversed") == [3, 2, 1, 0]
    seen = set()
    for index in range(50):
        perm = frame_permutation(4, "shuffled", seed=1, index=index)
        assert sorted(perm) == [0, 1, 2, 3]
        assert perm not in ([0, 1, 2, 3], [3, 2, 1, 0])
        assert perm == frame_permutation(4, "shuffled", seed=1, index=index)  # seeded
        seen.add(tuple(perm))
    assert len(seen) > 5  # different samples get different shuffles
    with pytest.raises(EvalError, match="--frame-order"):
        frame_permutation(4, "sideways")


def test_summarize_counts_unmatched_empty_per_class_and_confusions():
    rows = [
        {"label": "moving left", "generated": "The video shows moving left.", "generated_label": "moving left",
         "ranked": ["moving left", "moving right"]},
        {"label": "moving left", "generated": "moving sideways", "generated_label": None,
         "ranked": ["moving right", "moving left"]},
        {"label": "moving up", "generated": "", "generated_label": None,
         "ranked": ["moving down", "moving left"]},
        {"label": "moving up", "generated": "moving up", "generated_label": "moving up",
         "ranked": ["moving up", "moving down"]},
    ]  # fmt: skip
    run = summarize(rows, labels=LABELS, method="both", top_k=2, name="m", frame_order="normal")
    assert run["generation"]["top1"] == 0.5
    assert run["generation"]["unmatched"] == 1 and run["generation"]["empty"] == 1
    assert run["generation"]["unmatched_examples"] == ["moving sideways"]
    assert run["ranking"]["top1"] == 0.5 and run["ranking"]["top2"] == 0.75
    assert run["per_class"]["moving left"] == {
        "n": 2, "generation_correct": 1, "ranking_correct": 1,
        "generation_top1": 0.5, "ranking_top1": 0.5,
    }  # fmt: skip
    assert run["confused_pairs"] == [
        {"label": "moving left", "predicted": "moving right", "count": 1},
        {"label": "moving up", "predicted": "moving down", "count": 1},
    ]
    table = markdown_table({"runs": [run]})
    assert "| m | normal | 4 | 50.0% | 50.0% | 75.0% | 2 |" in table


def test_config_collects_every_problem():
    with pytest.raises(EvalError) as info:
        EvalConfig(model_id="m", data_path="d", frame_orders=("upside",), method="x", top_k=0,
                   compare_base=True)  # fmt: skip
    message = str(info.value)
    for part in ("--frame-order", "--method", "--top-k", "--compare-base"):
        assert part in message


# --- on the packaged tiny Gemma 4 ---------------------------------------------------------


def _scorer(base):
    from trainer.evaluate import Scorer, load_eval_model

    model, processor = load_eval_model(str(base))
    return Scorer(model, processor, AnswerMatcher(LABELS[:4], TEMPLATE)), model, processor


def _sample(data):
    from trainer.evaluate import load_eval_samples

    return load_eval_samples(
        data / "demo.validation.json", AnswerMatcher(LABELS[:4], TEMPLATE), split="validation"
    )


def test_ranking_with_shared_prompt_cache_equals_full_forward(tiny_lora_run):
    """Batched candidate scoring over one prompt pass == scoring each full conversation."""
    import torch

    from trainer.collator import VisionChatCollator
    from trainer.data import load_image

    data, _, base = tiny_lora_run
    scorer, model, processor = _scorer(base)
    sample = _sample(data)[0]
    images = [load_image(x) for x in sample.images]
    _, scores = scorer.run(
        sample, images, generate=False, rank=True, max_new_tokens=4, batch_size=3
    )
    collator = VisionChatCollator(processor)
    expected = []
    for label in LABELS[:4]:
        messages = sample.prompt_messages + [
            {
                "role": "assistant",
                "content": [{"type": "text", "text": TEMPLATE.format(label=label)}],
            }
        ]
        batch = collator([{"messages": messages, "images": images, "video": None}])
        labels = batch.pop("labels")
        with torch.no_grad():
            logits = model(**batch).logits[0].log_softmax(-1)
        targets = labels[0, 1:]
        keep = targets != -100
        expected.append(float(logits[:-1][keep].gather(-1, targets[keep][:, None]).sum()))
    assert scores == pytest.approx(expected, abs=1e-3)


def test_greedy_answer_equals_transformers_generate(tiny_lora_run):
    import torch

    from trainer.data import load_image

    data, _, base = tiny_lora_run
    scorer, model, processor = _scorer(base)
    sample = _sample(data)[1]
    images = [load_image(x) for x in sample.images]
    text, _ = scorer.run(sample, images, generate=True, rank=False, max_new_tokens=6, batch_size=4)
    _, inputs = scorer.prompt_inputs(sample.prompt_messages, images)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    new = out[0, inputs["input_ids"].shape[1] :]
    assert text == processor.tokenizer.decode(new, skip_special_tokens=True).strip()


def test_kprep_eval_base_and_adapter_side_by_side_with_controls(tiny_lora_run, tmp_path):
    from trainer.cli import app

    data, adapter, base = tiny_lora_run
    report_path = tmp_path / "report.json"
    result = CliRunner().invoke(
        app,
        [
            "eval",
            "--data-path", str(data / "demo.validation.json"),
            "--model-id", str(base),
            "--adapter", str(adapter),
            "--compare-base",
            "--frame-order", "normal",
            "--frame-order", "reversed",
            "--max-new-tokens", "6",
            "--top-k", "2",
            "--output", str(report_path),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "| base | normal | 4 |" in result.output
    assert "| fine-tuned | reversed | 4 |" in result.output
    report = json.loads(report_path.read_text())
    assert [(r["model"], r["frame_order"]) for r in report["runs"]] == [
        ("base", "normal"), ("base", "reversed"), ("fine-tuned", "normal"), ("fine-tuned", "reversed"),
    ]  # fmt: skip
    assert report["num_labels"] == 4 and report["answer_template"] == TEMPLATE
    for run in report["runs"]:
        assert 0.0 <= run["ranking"]["top1"] <= run["ranking"]["top2"] <= 1.0
        assert sum(e["n"] for e in run["per_class"].values()) == 4
        for row in run["predictions"]:
            assert row["label"] in LABELS and len(row["ranked"]) == 2
            assert row["frame_order"] == (
                [3, 2, 1, 0] if run["frame_order"] == "reversed" else [0, 1, 2, 3]
            )
    # the LoRA changed the model: some score differs between base and fine-tuned
    base_scores = [p["ranked_scores"] for p in report["runs"][0]["predictions"]]
    tuned_scores = [p["ranked_scores"] for p in report["runs"][2]["predictions"]]
    assert base_scores != tuned_scores
    md = report_path.with_suffix(".md").read_text()
    assert "| class | samples |" in md and "ranking top-1" in md


def test_kprep_eval_errors_are_one_line(tiny_lora_run, tmp_path):
    from trainer.cli import app

    data, _, base = tiny_lora_run
    runner = CliRunner()
    missing = runner.invoke(
        app, ["eval", "--data-path", str(tmp_path / "nope.json"), "--model-id", str(base)]
    )
    assert missing.exit_code == 2 and "does not exist" in missing.output
    (tmp_path / "x.json").write_text("[]")
    no_map = runner.invoke(
        app, ["eval", "--data-path", str(tmp_path / "x.json"), "--model-id", str(base)]
    )
    assert no_map.exit_code == 2 and "label_map.json" in no_map.output
    bad = runner.invoke(
        app,
        [
            "eval",
            "--data-path",
            str(data / "demo.json"),
            "--model-id",
            str(base),
            "--frame-order",
            "upside",
        ],
    )
    assert bad.exit_code == 2 and "--frame-order" in bad.output
