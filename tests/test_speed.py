"""Speed features that must not change what is learned (CPU, packaged tiny Gemma 4).

- frozen-vision cache (memory and disk): the same loss at every logged step and
  the same adapter weights as without it, over two epochs; refused when the
  vision tower or projector trains;
- DataLoader workers: the same losses and weights as decoding in the main process;
- micro-batching: 8 x 1 gives the same update as 1 x 8; --auto-batch keeps the
  configured split on a CPU and falls back past sizes that do not fit;
- QLoRA (--load-in-4bit) through bitsandbytes' CPU 4-bit path: which modules are
  4-bit, the adapter is a plain PEFT adapter that `kprep merge` folds into the
  unquantised base; the flag's errors.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from safetensors.torch import load_file  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from trainer.config import ConfigError, TrainConfig  # noqa: E402
from trainer.tiny import tiny_model_path, write_synthetic_manifest  # noqa: E402

TINY = str(tiny_model_path())
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _config(data, out, **kw) -> TrainConfig:
    base = dict(
        model_id=TINY,
        data_path=str(data),
        output_dir=str(out),
        max_steps=4,  # 4 samples, batch 2: two epochs, so the cache is reused
        per_device_train_batch_size=2,
        gradient_accumulation_steps=1,
        logging_steps=1,
        save_steps=100,
        optim="adamw_torch",
        learning_rate=1e-3,
        torch_threads=1,
        dataloader_num_workers=0,
    )
    base.update(kw)
    return TrainConfig(**base)


def _losses(summary) -> list[float]:
    return [e["loss"] for e in summary["log_history"] if "loss" in e]


def _assert_same_adapter(a, b, atol=1e-6):
    wa = load_file(str(a / "adapter_model.safetensors"))
    wb = load_file(str(b / "adapter_model.safetensors"))
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.allclose(wa[key], wb[key], atol=atol), key


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_synthetic_manifest(
        tmp_path_factory.mktemp("speed"), num_samples=4, labels=("tai chi", "moving left")
    )


@pytest.fixture(scope="module")
def uncached(data, tmp_path_factory):
    """The reference: no cache, decoding in the main process (LoRA dropout on)."""
    from trainer.train import train

    out = tmp_path_factory.mktemp("uncached")
    return out, train(_config(data, out, vision_cache="off"))


@pytest.mark.parametrize("mode", ["memory", "disk"])
def test_vision_cache_gives_the_same_losses_and_adapter(mode, data, uncached, tmp_path):
    from trainer.train import train
    from trainer.vision_cache import CACHE_DIRNAME, MARKER_NAME

    ref_out, ref = uncached
    out = tmp_path / mode
    summary = train(_config(data, out, vision_cache=mode))
    info = summary["effective"]["vision_cache"]
    assert info["mode"] == mode and info["samples"] == 4 and info["soft_token_bytes"] > 0
    assert ref["effective"]["vision_cache"]["mode"] == "off"
    assert summary["global_step"] == 4 and summary["epochs"] == pytest.approx(2.0)
    assert _losses(summary) == pytest.approx(_losses(ref), rel=1e-5)
    assert len(_losses(summary)) == 4
    _assert_same_adapter(out, ref_out)
    folders = list((out / CACHE_DIRNAME).glob("*")) if (out / CACHE_DIRNAME).exists() else []
    if mode == "disk":
        (folder,) = folders
        assert (folder / MARKER_NAME).is_file() and len(list(folder.glob("*.safetensors"))) == 4
        assert info["dtype"] == "float32"  # the CPU run's tower dtype (bf16 on a GPU run)
        # A later run in the same folder (--resume) with the same data and model reuses it.
        again = train(_config(data, out, vision_cache="disk", max_steps=1, resume=True))
        assert again["effective"]["vision_cache"]["reused"] is True
        assert _losses(again)[0] == pytest.approx(_losses(ref)[0], rel=1e-5)
    else:
        assert folders == []


def test_dataloader_workers_train_identically(data, uncached, tmp_path):
    from trainer.train import train

    ref_out, ref = uncached
    out = tmp_path / "workers"
    summary = train(
        _config(
            data, out, vision_cache="off", dataloader_num_workers=2, dataloader_prefetch_factor=2
        )
    )
    assert summary["effective"]["dataloader_num_workers"] == 2
    assert _losses(summary) == pytest.approx(_losses(ref), rel=1e-6)
    _assert_same_adapter(out, ref_out)


def test_vision_cache_is_refused_when_the_vision_side_trains(data, tmp_path):
    from trainer.cli import app
    from trainer.vision_cache import resolve_mode

    for flag in ("--projector-lr", "--image-encoder-lr"):
        result = CliRunner().invoke(
            app,
            ["train", "--data-path", str(data), "--output-dir", str(tmp_path / "x"),
             "--vision-cache", "memory", flag, "1e-4"],
        )  # fmt: skip
        assert result.exit_code == 2, result.output
        assert "--vision-cache" in result.output and flag in result.output
        assert len(result.output.strip().splitlines()) == 1
    # auto: on exactly when nothing upstream of the soft tokens trains.
    assert resolve_mode(_config(data, tmp_path, vision_cache="auto")) == "auto-pending"
    assert resolve_mode(_config(data, tmp_path, vision_cache="auto", projector_lr=1e-4)) == "off"
    assert (
        resolve_mode(_config(data, tmp_path, vision_cache="auto", image_encoder_lr=1e-4)) == "off"
    )
    assert resolve_mode(_config(data, tmp_path, vision_cache="auto"), vision_dropout=0.1) == "off"
    with pytest.raises(ConfigError, match="dropout"):
        resolve_mode(_config(data, tmp_path, vision_cache="disk"), vision_dropout=0.1)


def test_micro_batch_8x1_updates_like_1x8_and_auto_batch_keeps_it_on_cpu(tmp_path):
    """The reference's 1 x 8 and 8 x 1 give the same updates; --auto-batch on a CPU keeps 8 x 1."""
    from trainer.train import train

    data = write_synthetic_manifest(
        tmp_path / "d", num_samples=16, labels=("tai chi", "moving left while spinning slowly")
    )
    common = dict(max_steps=2, lora_dropout=0.0, learning_rate=1e-3, logging_steps=1)
    one_by_eight = train(
        _config(
            data,
            tmp_path / "1x8",
            per_device_train_batch_size=1,
            gradient_accumulation_steps=8,
            **common,
        )
    )
    eight_by_one = train(
        _config(
            data,
            tmp_path / "8x1",
            per_device_train_batch_size=8,
            gradient_accumulation_steps=1,
            auto_batch=True,
            **common,
        )
    )
    eff = eight_by_one["effective"]
    assert eff["auto_batch"] is True and eff["probed"] == []
    assert (eff["micro_batch"], eff["accumulation"], eff["effective_batch"]) == (8, 1, 8)
    assert one_by_eight["effective"]["micro_batch"] == 1
    assert _losses(eight_by_one) == pytest.approx(_losses(one_by_eight), rel=1e-4)
    _assert_same_adapter(tmp_path / "8x1", tmp_path / "1x8", atol=1e-5)


def test_auto_batch_picks_the_largest_divisor_that_fits():
    from trainer.auto_batch import candidates, pick
    from trainer.errors import TrainError

    assert candidates(8) == [8, 4, 2, 1] and candidates(6, limit=4) == [3, 2, 1]
    tried = []

    def fits(size):
        tried.append(size)
        return size <= 2

    assert pick(8, fits) == 2 and tried == [8, 4, 2]
    with pytest.raises(TrainError, match="--auto-batch"):
        pick(4, lambda size: False)


def test_qlora_trains_a_plain_peft_adapter_that_merge_folds_into_the_full_base(data, tmp_path):
    """bitsandbytes' CPU 4-bit path: NF4 text Linears, vision/projector/LM head unquantised."""
    from peft import PeftModel
    from transformers import Gemma4ForConditionalGeneration

    from trainer.cli import app
    from trainer.model import load_model, part_of
    from trainer.quant import quantized_module_names
    from trainer.train import train

    cfg = _config(data, tmp_path / "q", load_in_4bit=True, max_steps=2)
    model, info = load_model(cfg)
    names = quantized_module_names(model)
    text_linears = [  # every Linear of the text model except the LM head (tied to embeddings)
        n
        for n, m in Gemma4ForConditionalGeneration.from_pretrained(TINY).named_modules()
        if isinstance(m, torch.nn.Linear) and part_of(n) == "text" and n != "lm_head"
    ]
    assert any(".layers." in n for n in text_linears)
    bare = [n.replace("base_model.model.", "").replace(".base_layer", "") for n in names]
    assert sorted(bare) == sorted(text_linears)
    assert info.quantized_modules == len(text_linears) > 0
    assert not any("vision" in n or "embed_vision" in n or n.endswith("lm_head") for n in names)
    weight = model.get_base_model().model.language_model.layers[0].self_attn.q_proj.base_layer
    assert weight.weight.quant_state.quant_type == "nf4"
    assert weight.weight.quant_state.nested  # double quantisation
    del model

    summary = train(cfg)
    assert summary["effective"]["load_in_4bit"] is True and summary["lora_modules"] == 24
    assert all(loss > 0 for loss in _losses(summary))
    out = tmp_path / "q"
    adapter_cfg = json.loads((out / "adapter_config.json").read_text())
    assert adapter_cfg["peft_type"] == "LORA" and adapter_cfg["base_model_name_or_path"] == TINY
    # An ordinary PEFT adapter: it loads on the unquantised base.
    tuned = PeftModel.from_pretrained(
        Gemma4ForConditionalGeneration.from_pretrained(TINY), str(out)
    )
    assert any("lora_B" in n and p.abs().sum() > 0 for n, p in tuned.named_parameters())
    # kprep eval accepts it (ranking on the unquantised base + adapter).
    labels = tmp_path / "label_map.json"
    labels.write_text(
        json.dumps(
            {"labels": ["tai chi", "moving left"], "answer_template": "The video shows {label}."}
        )
    )
    report = tmp_path / "eval.json"
    ev = CliRunner().invoke(
        app,
        ["eval", "--data-path", str(data), "--model-id", TINY, "--adapter", str(out),
         "--label-map", str(labels), "--method", "ranking", "--output", str(report)],
    )  # fmt: skip
    assert ev.exit_code == 0, ev.output
    run = json.loads(report.read_text())["runs"][-1]
    assert 0.0 <= run["ranking"]["top1"] <= 1.0
    merged = tmp_path / "merged"
    result = CliRunner().invoke(app, ["merge", "--adapter", str(out), "--output", str(merged)])
    assert result.exit_code == 0, result.output
    state = load_file(str(merged / "model.safetensors"))
    q = next(k for k in state if k.endswith("layers.0.self_attn.q_proj.weight"))
    assert state[q].dtype in (torch.float32, torch.bfloat16) and state[q].ndim == 2


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--no-use-lora"], "--load-in-4bit (True) needs LoRA"),
        (["--deepspeed", "zero2"], "pass --deepspeed none"),
        (["--num-gpus", "2"], "without DeepSpeed"),
    ],
)
def test_load_in_4bit_flag_errors(extra, message, tmp_path):
    from trainer.cli import app

    result = CliRunner().invoke(
        app,
        ["train", "--data-path", "d.json", "--output-dir", str(tmp_path), "--load-in-4bit", *extra],
    )
    assert result.exit_code == 2 and message in result.output, result.output


def test_uint8_pixels_rescaled_on_the_device_equal_the_processors_floats(data):
    """Workers ship uint8 patches; pixels_to_model gives the processor's float32 bit for bit."""
    from trainer.collator import PIXEL_RESCALE, VisionChatCollator, pixels_to_model
    from trainer.data import ConversationDataset, load_samples
    from trainer.model import load_processor

    processor = load_processor(TINY)
    items = [ConversationDataset(load_samples(data))[i] for i in range(2)]
    floats = VisionChatCollator(processor)(items)
    packed = VisionChatCollator(processor, uint8_pixels=True)(items)
    assert packed["pixel_values"].dtype == torch.uint8 and PIXEL_RESCALE not in floats
    assert packed["pixel_values"].element_size() * 4 == floats["pixel_values"].element_size()
    restored = pixels_to_model(packed)
    assert PIXEL_RESCALE not in restored
    assert torch.equal(restored["pixel_values"], floats["pixel_values"])
    for key in floats:
        if key != "pixel_values":
            assert torch.equal(restored[key], floats[key]), key


@pytest.mark.parametrize("size", [(340, 256), (256, 340), (1000, 100), (50, 50)])
def test_fast_image_processor_equals_the_stock_one(size):
    """trainer/pixels.py: same pixel_values / positions / token counts as transformers'."""
    import numpy as np
    from PIL import Image

    from trainer.model import load_processor
    from trainer.pixels import FastGemma4ImageProcessor, fast_processor

    processor = load_processor(TINY)
    fast = fast_processor(processor)
    assert isinstance(fast.image_processor, FastGemma4ImageProcessor)
    assert type(processor.image_processor) is not FastGemma4ImageProcessor  # saved one: stock
    rng = np.random.default_rng(sum(size))
    frames = [
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
        for _ in range(3)
    ]
    for kwargs in ({}, {"do_rescale": False}, {"max_soft_tokens": 280}):
        a = processor.image_processor(frames, return_tensors="pt", **kwargs)
        b = fast.image_processor(frames, return_tensors="pt", **kwargs)
        assert a["pixel_values"].dtype == b["pixel_values"].dtype
        assert torch.equal(a["pixel_values"], b["pixel_values"]), kwargs
        assert torch.equal(a["image_position_ids"], b["image_position_ids"]), kwargs
        assert torch.equal(
            torch.as_tensor(a["num_soft_tokens_per_image"]),
            torch.as_tensor(b["num_soft_tokens_per_image"]),
        )


def test_e4b_global_layers_use_head_dim_512_so_sdpa_stays_the_default():
    """docs/training.md's attention note, on E4B's real shapes (a meta-device model)."""
    from transformers import Gemma4ForConditionalGeneration

    from trainer.tiny import e4b_shaped_config

    cfg = e4b_shaped_config()
    with torch.device("meta"):
        model = Gemma4ForConditionalGeneration._from_config(cfg)
    dims: dict[str, set[int]] = {}
    for kind, layer in zip(
        cfg.text_config.layer_types, model.model.language_model.layers, strict=True
    ):
        dims.setdefault(kind, set()).add(layer.self_attn.head_dim)
    assert dims == {"sliding_attention": {256}, "full_attention": {512}}
    assert cfg.text_config.layer_types.count("full_attention") == 7  # of 42 layers
    assert Gemma4ForConditionalGeneration._supports_flash_attn is False  # transformers' own flag
    assert TrainConfig().attn_implementation == "sdpa"
    with pytest.raises(ConfigError, match="attn-implementation"):
        TrainConfig(attn_implementation="flash_attention_2")


def test_deepspeed_none_clears_a_config_files_setting_for_qlora(tmp_path):
    from trainer.train import resolve_deepspeed

    recipe = Path(__file__).resolve().parents[1] / "trainer" / "configs" / "gemma4_e4b_lora.yaml"
    cfg = TrainConfig.from_sources(
        config_file=recipe, overrides={"load_in_4bit": True, "deepspeed": "none"}
    )
    assert cfg.load_in_4bit and resolve_deepspeed(cfg.deepspeed, max_grad_norm=1.0) is None
    with pytest.raises(ConfigError, match="--deepspeed none"):
        TrainConfig.from_sources(config_file=recipe, overrides={"load_in_4bit": True})


def test_auto_batch_is_refused_for_multi_gpu_runs(tmp_path):
    from trainer.cli import app

    result = CliRunner().invoke(
        app,
        ["train", "--data-path", "d.json", "--output-dir", str(tmp_path), "--auto-batch",
         "--num-gpus", "2"],
    )  # fmt: skip
    assert result.exit_code == 2 and "--auto-batch (True) probes one GPU" in result.output


def test_fast_image_processor_without_resize_equals_the_stock_one():
    """The demo model's processor skips the resize (do_resize False): same output too."""
    import numpy as np
    from PIL import Image

    from trainer.model import load_processor
    from trainer.pixels import fast_processor

    processor = load_processor(TINY)
    fast = fast_processor(processor)
    rng = np.random.default_rng(0)
    frames = [Image.fromarray(rng.integers(0, 256, (64, 48, 3), dtype=np.uint8)) for _ in range(2)]
    for kwargs in ({"do_resize": False}, {"do_resize": False, "do_rescale": False}):
        a = processor.image_processor(frames, return_tensors="pt", **kwargs)
        b = fast.image_processor(frames, return_tensors="pt", **kwargs)
        assert torch.equal(a["pixel_values"], b["pixel_values"]), kwargs
        assert torch.equal(a["image_position_ids"], b["image_position_ids"]), kwargs
