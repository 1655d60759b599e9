"""A node lost mid-run: a real two-node Ray cluster on one machine (ray.cluster_utils).

A head with no CPUs (the driver's node) and two worker nodes of one CPU each.
After the first records arrive, one worker node is removed while clips are in
flight on it. Every clip must still end ``ok`` exactly once, with exact frames
(barcodes), and no record line may repeat.
"""

from __future__ import annotations

import json

import cv2
import psutil
import pytest
import ray
from ray.cluster_utils import Cluster

from kinetics_prep.extract import ExtractConfig, extract_clips
from kinetics_prep.synthetic import read_counter, write_counter_clip

SMALL_STORE = 80 * 1024 * 1024


@pytest.fixture
def two_node_cluster():
    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 0,
            "object_store_memory": SMALL_STORE,
            "include_dashboard": False,
            # Notice a lost node within ~1.5 s instead of the default ~15 s.
            "_system_config": {"health_check_period_ms": 500, "health_check_failure_threshold": 3},
        },
    )
    workers = [cluster.add_node(num_cpus=1, object_store_memory=SMALL_STORE) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    yield cluster, workers
    ray.shutdown()
    cluster.shutdown()


@pytest.mark.slow
def test_losing_a_node_mid_run_reruns_its_clips_elsewhere(two_node_cluster, tmp_path):
    cluster, workers = two_node_cluster
    clips = tmp_path / "clips"
    for i in range(10):
        write_counter_clip(clips / f"c{i:02d}.mp4", num_frames=120, width=320, height=240)
    out = tmp_path / "out"
    removed = []

    def decoding_on(node) -> int:
        """Decoding subprocesses under the node's raylet (raylet -> Ray worker -> decoder)."""
        (raylet,) = [p for name, p in node.live_processes() if name == "raylet"]
        tree = psutil.Process(raylet.pid).children(recursive=True)
        return sum("_worker_entry" in " ".join(p.cmdline()) for p in tree)

    def on_record(record: dict) -> None:
        if not removed and record["status"] == "ok":
            removed.append(decoding_on(workers[1]))
            cluster.remove_node(workers[1])  # with a clip running on it and one queued


    config = ExtractConfig(clips=clips, output_dir=out, engine="ray", timeout=60)
    summary = extract_clips(config, on_record=on_record)

    assert removed == [1], "the removed node should have been decoding"
    assert ray.cluster_resources().get("CPU") == 1  # the run finished on the surviving node
    lines = (out / "extract_results.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    ids = [r["clip_id"] for r in records]
    assert sorted(ids) == [f"c{i:02d}" for i in range(10)], ids  # exactly once each
    assert summary.ok == 10 and not summary.failed
    for record in records:
        assert record["status"] == "ok", record
        codes = [read_counter(cv2.imread(str(out / n))[..., ::-1]) for n in record["frames"]]
        assert codes == record["frame_indices"]
    assert not [p.name for p in (out / "frames").iterdir() if p.name.startswith(".")]


@pytest.mark.slow
def test_kill_9_of_the_ray_driver_loses_only_clips_in_flight(tmp_path):
    """The driver (with the local Ray it started) is killed part-way; a rerun finishes."""
    import os
    import signal
    import subprocess
    import sys
    import time

    if ray.is_initialized():
        ray.shutdown()
    clips = tmp_path / "clips"
    for i in range(16):
        write_counter_clip(clips / f"k{i:02d}.mp4", num_frames=60, width=160, height=120)
    out = tmp_path / "out"
    results = out / "extract_results.jsonl"
    command = [sys.executable, "-c", "from kinetics_prep.cli import main; main()", "extract",
               "--clips", str(clips), "--output-dir", str(out), "--engine", "ray",
               "--ray-address", "local", "--workers", "2"]  # fmt: skip
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if results.exists() and results.read_text().count("\n") >= 3:
            break
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)  # the driver, its Ray and the workers
    process.wait()
    first = [json.loads(line) for line in results.read_text().splitlines() if line.endswith("}")]
    assert 3 <= len(first) < 16, "the run should have been killed part-way"
    done = {r["clip_id"] for r in first if r["status"] == "ok"}

    config = ExtractConfig(clips=clips, output_dir=out, engine="local", workers=2)
    summary = extract_clips(config)
    assert summary.skipped_ok == len(done) and summary.ok == 16 - len(done)
    final = {}
    for line in results.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # at most the one line the kill tore
        final[record["clip_id"]] = record
    assert len(final) == 16 and all(r["status"] == "ok" for r in final.values())
    for record in final.values():
        codes = [read_counter(cv2.imread(str(out / n))[..., ::-1]) for n in record["frames"]]
        assert codes == record["frame_indices"]
