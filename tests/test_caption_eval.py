"""Caption evaluation (trainer.caption_eval) and the VATEX caption pipeline end to end.

The end-to-end test makes barcode clips named in VATEX's id scheme, a
VATEX-format caption file and a Kinetics-600-style CSV, then runs `kprep
download` (local source), `extract` (the reference recipe: interior frames,
squashed), `build-manifest --captions`, `validate` and `eval` with the tiny
random Gemma 4 (base and a LoRA adapter, normal and reversed frames).
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

pytest.importorskip("pycocoevalcap")

from trainer.caption_eval import (  # noqa: E402
    caption_scores,
    mentions_label,
    summarize_captions,
    tokenize,
)

PREDICTIONS = {
    "a": "A man is riding a horse in a field.",
    "b": "Two kids play drums, loudly!",
    "c": "",
}
REFERENCES = {
    "a": ["A man rides a horse across a grassy field.", "A person is riding a brown horse."],
    "b": ["Two children are playing the drums.", "Kids bang on a drum set.", "A boy drums."],
    "c": ["A woman is cooking pasta in a kitchen."],
}


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("A man lassos a young cow, and hops off his horse!", "a man lassos a young cow and hops off his horse"),
        ("  Two   KIDS play drums.", "two kids play drums"),
        ("The cow's legs are tied.", "the cow's legs are tied"),
        ("", ""),
    ],
)  # fmt: skip
def test_tokenize(text, tokens):
    assert tokenize(text) == tokens


def test_scores_equal_the_librarys_own_output():
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    ours = caption_scores(PREDICTIONS, REFERENCES)
    gts = {i: [tokenize(r) for r in refs] for i, refs in REFERENCES.items()}
    res = {i: [tokenize(p)] for i, p in PREDICTIONS.items()}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    rouge, rouge_each = Rouge().compute_score(gts, res)
    cider, cider_each = Cider().compute_score(gts, res)
    assert [ours[f"bleu{n}"] for n in (1, 2, 3, 4)] == pytest.approx(bleu, abs=0, rel=1e-12)
    assert ours["rouge_l"] == pytest.approx(rouge, rel=1e-12)
    assert ours["cider"] == pytest.approx(cider, rel=1e-12)
    assert [ours["per_sample"][i]["cider"] for i in sorted(PREDICTIONS)] == pytest.approx(
        list(cider_each)
    )
    assert ours["per_sample"]["c"] == {"rouge_l": 0.0, "cider": 0.0}  # empty answer scores 0
    assert 0.0 < ours["bleu4"] < ours["bleu1"] < 1.0 and ours["rouge_l"] > 0.3
    assert list(rouge_each) == pytest.approx([ours["per_sample"][i]["rouge_l"] for i in "abc"])


def test_a_perfect_answer_scores_one():
    refs = {"x": ["a dog runs on the beach"], "y": ["a cat sleeps on a sofa today"]}
    scores = caption_scores(
        {"x": "A dog runs on the beach.", "y": "A cat sleeps on a sofa today"}, refs
    )
    assert scores["bleu4"] == pytest.approx(1.0, abs=1e-6)
    assert scores["rouge_l"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("text", "label", "expected"),
    [
        ("A man is air drumming to music.", "air drumming", True),
        ("Someone is AIR-DRUMMING", "air drumming", True),  # punctuation separates words
        ("A man is air_drumming.", "air drumming", True),  # the normaliser maps _ to space
        ("People are drumming.", "air drumming", False),
        ("Massaging person's head slowly", "massaging person's head", True),
        ("", "abseiling", False),
        (None, "abseiling", False),
    ],
)
def test_label_mention(text, label, expected):
    assert mentions_label(text, label) is expected


def test_summary_keeps_every_answer_and_counts_mentions():
    rows = [
        {"id": "a", "generated": PREDICTIONS["a"], "references": REFERENCES["a"],
         "label": "riding a horse", "mentions_label": mentions_label(PREDICTIONS["a"], "riding a horse")},
        {"id": "c", "generated": "", "references": REFERENCES["c"],
         "label": "cooking pasta", "mentions_label": False},
    ]  # fmt: skip
    run = summarize_captions(rows, name="base", frame_order="normal")
    assert run["label_mention"] == {"rate": 0.5, "mentioned": 1, "samples": 2}
    assert run["empty"] == 1
    assert [r["generated"] for r in run["predictions"]] == [PREDICTIONS["a"], ""]
    assert set(run["captions"]) == {"bleu1", "bleu2", "bleu3", "bleu4", "rouge_l", "cider"}


# --- end to end --------------------------------------------------------------------------

CLIPS = [  # (VATEX videoID, frames, K600 label)
    ("Ptf_2VRj-V0_000122_000132", 30, "riding or walking with horse"),
    ("--6bJUbfpnQ_000017_000027", 26, "air drumming"),
    ("a_b_c_d_e_f_000001_000011", 34, "abseiling"),
    ("Zz9-yyyyyyy_000003_000013", 28, "abseiling"),
]


def test_vatex_captions_end_to_end(tmp_path, tiny_lora_run, one_torch_thread):
    from kinetics_prep.synthetic import write_counter_clip
    from trainer.cli import app

    _, adapter, base = tiny_lora_run
    runner = CliRunner()
    have = tmp_path / "have"
    for clip_id, frames, _ in CLIPS[:3]:  # the fourth is gone, as on YouTube
        write_counter_clip(have / f"{clip_id}.mp4", num_frames=frames, width=96, height=64)
    vatex = tmp_path / "vatex_training_v1.0.json"
    entries = [
        {"videoID": clip_id, "enCap": [f"{label.capitalize()} {k}." for k in range(10)],
         "chCap": ["中文"] * 10}
        for clip_id, _, label in CLIPS
    ]  # fmt: skip
    vatex.write_text(json.dumps(entries))
    k600 = tmp_path / "kinetics600_train.csv"
    k600.write_text(
        "label,youtube_id,time_start,time_end,split\n"
        + "".join(
            f'"{label}",{c[:11]},{int(c[12:18])},{int(c[19:])},train\n' for c, _, label in CLIPS
        )
    )

    def ok(*args):
        result = runner.invoke(app, [str(a) for a in args])
        assert result.exit_code == 0, result.output
        return result

    work = tmp_path / "work"
    ok(
        "download",
        "--annotations",
        vatex,
        "--source",
        "local",
        "--clips",
        have,
        "--output-dir",
        work,
    )
    report = json.loads((work / "download_report.json").read_text())
    assert report["downloaded"] == 3 and report["failed"] == 1
    ok("extract", "--clips", work / "clips", "--output-dir", work / "frames_out",
       "--sampling", "interior", "--resize", "48x48", "--workers", "1", "--annotations", vatex)  # fmt: skip
    manifest = tmp_path / "ds" / "kinetic_3K.json"
    ok("build-manifest", "--frames-dir", work / "frames_out", "--output", manifest,
       "--captions", vatex, "--caption", "all", "--annotations", k600, "--val-fraction", "0.34")  # fmt: skip
    built = json.loads(manifest.read_text())
    assert {e["id"] for e in built} == {c for c, _, _ in CLIPS[:3]}
    for entry in built:
        caps = next(e["enCap"] for e in entries if e["videoID"] == entry["id"])
        assert entry["messages"][1]["content"][0]["text"] == caps[0]  # the first caption answers
        assert entry["captions"] == caps  # --caption all keeps every one
        assert entry["label"] == next(label for c, _, label in CLIPS if c == entry["id"])
        assert entry["frame_indices"] == sorted(entry["frame_indices"])
    label_map = json.loads((manifest.parent / "label_map.json").read_text())
    assert label_map["answer_template"] is None
    result = ok("validate", manifest, "--num-frames", "4", "--json")
    assert json.loads(result.output)["ok"]
    ok("validate", manifest.with_name("kinetic_3K_arrow"), "--num-frames", "4")

    out = tmp_path / "eval.json"
    result = ok(
        "eval", "--data-path", manifest.with_name("kinetic_3K_arrow"), "--split", "validation",
        "--model-id", base, "--adapter", adapter, "--compare-base",
        "--frame-order", "normal", "--frame-order", "reversed",
        "--method", "generation", "--max-new-tokens", "6", "--output", out,
    )  # fmt: skip
    assert "| BLEU-4 | ROUGE-L | CIDEr |" in result.output
    report = json.loads(out.read_text())
    assert report["task"] == "captions" and report["references_per_sample"] == 10
    assert [(r["model"], r["frame_order"]) for r in report["runs"]] == [
        ("base", "normal"), ("base", "reversed"), ("fine-tuned", "normal"), ("fine-tuned", "reversed"),
    ]  # fmt: skip
    for run in report["runs"]:
        assert run["num_samples"] == report["num_samples"] >= 1
        assert 0.0 <= run["captions"]["bleu4"] <= 1.0 and run["captions"]["cider"] >= 0.0
        assert run["label_mention"]["samples"] == run["num_samples"]
        for row in run["predictions"]:
            assert isinstance(row["generated"], str) and len(row["references"]) == 10
            assert row["frame_order"] == (
                [3, 2, 1, 0] if run["frame_order"] == "reversed" else [0, 1, 2, 3]
            )
    md = out.with_suffix(".md").read_text()
    assert "| id | generated | first reference |" in md and "METEOR not computed" in md
    ranking = runner.invoke(
        app, ["eval", "--data-path", str(manifest), "--model-id", str(base), "--method", "ranking"]
    )
    assert ranking.exit_code == 2 and "--method generation" in ranking.output


def test_which_evaluation_a_dataset_gets(tmp_path, tiny_lora_run):
    from test_reference_import import EXCERPT, lay_out

    from trainer.caption_eval import is_caption_data
    from trainer.evaluate import EvalConfig

    data, _, base = tiny_lora_run
    lay_out(EXCERPT, tmp_path / "ref")
    published = tmp_path / "ref" / "kinetic_3K.json"  # no label map: captions
    assert is_caption_data(EvalConfig(model_id=str(base), data_path=str(published)))
    assert not is_caption_data(EvalConfig(model_id=str(base), data_path=str(data / "demo.json")))
    (tmp_path / "empty.json").write_text("[]")  # nothing to read: the label path explains
    assert not is_caption_data(
        EvalConfig(model_id=str(base), data_path=str(tmp_path / "empty.json"))
    )
