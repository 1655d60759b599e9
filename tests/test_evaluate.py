"""`kprep eval`: the normaliser, the frame-order control, exact batched scoring, reports,
chat templates with a thought block (issue 10 bug 1) and raw-video samples (bug 3)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from trainer.errors import ConfigError, EvalError
from trainer.evaluate import EvalConfig, frame_permutation
from trainer.labels import AnswerMatcher, normalize_answer
from trainer.report import markdown_table, summarize

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
    with pytest.raises(ConfigError) as info:
        EvalConfig(model_id="m", data_path="d", frame_orders=("upside",), method="x", top_k=0,
                   compare_base=True)  # fmt: skip
    message = str(info.value)
    for part in ("--frame-order", "--method", "--top-k", "--compare-base"):
        assert part in message


# --- on the packaged tiny Gemma 4 ---------------------------------------------------------


def _scorer(base, processor=None):
    from trainer.evaluate import Scorer
    from trainer.loading import load_finetuned

    model, loaded = load_finetuned(str(base))
    processor = processor or loaded
    return Scorer(model, processor, AnswerMatcher(LABELS[:4], TEMPLATE)), model, processor


def _items(data):
    """Dataset items of the held-out samples, as eval builds them (with the answer turn)."""
    from trainer.data import ConversationDataset
    from trainer.evaluate import load_eval_samples

    samples = load_eval_samples(
        data / "demo.validation.json", AnswerMatcher(LABELS[:4], TEMPLATE), split="validation"
    )
    dataset = ConversationDataset(samples)
    return [dataset[i] for i in range(len(dataset))]


def _full_conversation_scores(model, processor, item) -> list[float]:
    """Each label's answer scored the way training sees it: the collator on the whole
    conversation, one forward pass per label, log-probs of the labelled tokens summed."""
    import torch

    from trainer.collator import VisionChatCollator

    collator = VisionChatCollator(processor)
    expected = []
    for label in LABELS[:4]:
        messages = item["messages"][:-1] + [
            {
                "role": "assistant",
                "content": [{"type": "text", "text": TEMPLATE.format(label=label)}],
            }
        ]
        batch = collator([{**item, "messages": messages}])
        labels = batch.pop("labels")
        with torch.no_grad():
            logits = model(**batch).logits[0].log_softmax(-1)
        targets = labels[0, 1:]
        keep = targets != -100
        expected.append(float(logits[:-1][keep].gather(-1, targets[keep][:, None]).sum()))
    return expected


def test_ranking_with_shared_prompt_cache_equals_full_forward(tiny_lora_run):
    """Batched candidate scoring over one prompt pass == scoring each full conversation."""
    from trainer.evaluate import prompt_item

    data, _, base = tiny_lora_run
    scorer, model, processor = _scorer(base)
    item = _items(data)[0]
    _, scores = scorer.run(
        prompt_item(item), generate=False, rank=True, max_new_tokens=4, batch_size=3
    )
    assert scores == pytest.approx(_full_conversation_scores(model, processor, item), abs=1e-3)


def test_ranking_with_an_empty_thought_block_template_scores_what_training_trains(tiny_lora_run):
    """Issue 10 bug 1: a generation prompt ending with an empty thought block (larger
    Gemma 4 templates) trains (the collator locates the answer) and must rank too:
    the scorer locates each candidate answer with the collator's own function."""
    import copy

    from trainer.evaluate import prompt_item
    from trainer.tiny import CHAT_TEMPLATE

    data, _, base = tiny_lora_run
    _, _, processor = _scorer(base)
    thinking = copy.copy(processor)
    thinking.chat_template = CHAT_TEMPLATE.replace(
        "{{ '<|turn>model\\n' }}{%- endif -%}",
        "{{ '<|turn>model\\n<|channel>thought\\n<channel|>' }}{%- endif -%}",
    )
    assert "<channel|>" in thinking.chat_template
    scorer, model, _ = _scorer(base, thinking)
    item = _items(data)[0]
    prompt, _ = scorer.prompt_inputs(prompt_item(item))
    assert prompt.endswith("<|turn>model\n<|channel>thought\n<channel|>")
    text, scores = scorer.run(
        prompt_item(item), generate=True, rank=True, max_new_tokens=4, batch_size=2
    )
    assert isinstance(text, str)
    assert scores == pytest.approx(_full_conversation_scores(model, thinking, item), abs=1e-3)


def test_greedy_answer_equals_transformers_generate(tiny_lora_run):
    import torch

    from trainer.evaluate import prompt_item

    data, _, base = tiny_lora_run
    scorer, model, processor = _scorer(base)
    item = prompt_item(_items(data)[1])
    text, _ = scorer.run(item, generate=True, rank=False, max_new_tokens=6, batch_size=4)
    _, inputs = scorer.prompt_inputs(item)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    new = out[0, inputs["input_ids"].shape[1] :]
    assert text == processor.tokenizer.decode(new, skip_special_tokens=True).strip()


def test_gold_label_is_the_samples_label_not_its_answer(tiny_lora_run, tmp_path):
    """The label travels from the manifest: an answer that is no label's template
    (a caption) still has its gold label, and a sample without a label is refused."""
    from trainer.evaluate import load_eval_samples

    data, _, _ = tiny_lora_run
    entries = json.loads((data / "demo.validation.json").read_text())
    for entry in entries:
        entry["messages"][-1]["content"][0]["text"] = "A bright square crosses the frame."
    captions = data / "captions.validation.json"
    captions.write_text(json.dumps(entries))
    matcher = AnswerMatcher(LABELS[:4], TEMPLATE)
    samples = load_eval_samples(captions, matcher)
    assert [s.label for s in samples] == [e["label"] for e in entries]
    del entries[0]["label"]
    captions.write_text(json.dumps(entries))
    with pytest.raises(EvalError, match="has no 'label'"):
        load_eval_samples(captions, matcher)
    entries[0]["label"] = "juggling"
    captions.write_text(json.dumps(entries))
    with pytest.raises(EvalError, match="not in the label map"):
        load_eval_samples(captions, matcher)


def _video_dataset(root):
    """A raw-video manifest ({"type": "video"} samples) of demo clips, and its label map."""
    from kinetics_prep.demo_clips import write_demo_clips
    from kinetics_prep.schema import Sample, write_label_map, write_manifest

    clips = write_demo_clips(root / "clips", clips_per_class=1, num_frames=16, size=32)
    samples = [
        Sample(
            id=clip.path.stem,
            prompt="What happens?",
            answer=TEMPLATE.format(label=clip.label),
            video=str(clip.path.relative_to(root)),
            label=clip.label,
            split="validation",
        )
        for clip in clips
    ]
    write_manifest(root / "video.validation.json", samples)
    write_label_map(root / "label_map.json", [c.label for c in clips], answer_template=TEMPLATE)
    return root / "video.validation.json", clips


def test_kprep_eval_takes_raw_video_samples(tiny_lora_run, tmp_path):
    """Issue 10 bug 3: eval takes the {"type": "video"} samples training takes (decoded
    with the recipe's sampling, the frames of the video reordered for the controls)."""
    from trainer.cli import app

    _, adapter, base = tiny_lora_run
    manifest, clips = _video_dataset(tmp_path)
    report_path = tmp_path / "video_report.json"
    result = CliRunner().invoke(
        app,
        [
            "eval", "--data-path", str(manifest), "--model-id", str(base),
            "--adapter", str(adapter), "--frame-order", "normal", "--frame-order", "reversed",
            "--max-new-tokens", "4", "--top-k", "2", "--output", str(report_path),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(report_path.read_text())
    assert report["num_samples"] == len(clips) == report["num_videos"]
    assert report["video"] == {"num_frames": 4, "sampling": "center", "decoder": "auto"}
    for run in report["runs"]:
        assert [row["label"] for row in run["predictions"]] == [c.label for c in clips]
        for row in run["predictions"]:
            assert row["frame_order"] == (
                [3, 2, 1, 0] if run["frame_order"] == "reversed" else [0, 1, 2, 3]
            )
            assert len(row["ranked"]) == 2
    normal, reversed_ = ([p["ranked_scores"] for p in r["predictions"]] for r in report["runs"])
    assert normal != reversed_  # the video frames really were reordered


def test_eval_video_item_scores_like_training_sees_it(tiny_lora_run, tmp_path):
    """A raw-video sample's ranking equals the collator's full-conversation scores."""
    from trainer.data import ConversationDataset
    from trainer.evaluate import load_eval_samples, prompt_item

    _, _, base = tiny_lora_run
    manifest, _ = _video_dataset(tmp_path)
    scorer, model, processor = _scorer(base)
    samples = load_eval_samples(manifest, AnswerMatcher(LABELS[:4], TEMPLATE))
    item = ConversationDataset(samples)[0]
    assert item["video"] is not None and item["images"] == []
    _, scores = scorer.run(
        prompt_item(item), generate=False, rank=True, max_new_tokens=4, batch_size=4
    )
    assert scores == pytest.approx(_full_conversation_scores(model, processor, item), abs=1e-3)


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
