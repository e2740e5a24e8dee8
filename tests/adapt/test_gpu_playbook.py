"""A dry run of the GPU playbook (scripts/gpu/playbook.py) on CPU with a tiny model: the GGUF split into pieces that
travel in separate runs, stored, reassembled and checked, then the whole job (distill, adapt, benchmark) into an
output folder that holds what the device would send back. Also: the job stops at once when a piece is gone."""

import json
import lzma
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK = ROOT / "scripts" / "gpu" / "playbook.py"

TINY_JOB = ["--device", "cpu", "--budget", "300", "--distill-prompts", "8", "--distill-target", "400",
            "--distill-tokens", "24", "--distill-batch", "4", "--distill-chunk-batches", "1", "--distill-seconds", "90",
            "--train-seconds-min", "30", "--bench-seconds", "90", "--bench-prompts", "2", "--bench-tokens", "12",
            "--batch-size", "4", "--seq-len", "64", "--lora-rank", "4", "--block-sizes", "1,2", "--warmup-steps", "2",
            "--checkpoint-every", "5", "--max-steps", "12"]


def _playbook(*args, cwd=None, timeout=600, **extra_env):
    env = {k: v for k, v in os.environ.items() if k not in ("OUT", "BLOCKGEN_HOME", "PYTHONPATH")} | extra_env
    return subprocess.run([sys.executable, str(PLAYBOOK), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=cwd)


def _carry(prepared: Path, run: Path, names: list[str]) -> Path:
    """The files one device run carries, laid out as the run would see them."""
    carried = run / ".gpu"
    carried.mkdir(parents=True)
    for name in names:
        source = prepared / name
        (shutil.copytree if source.is_dir() else shutil.copyfile)(source, carried / name)
    return carried


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    from helpers import tiny_hf_model, write_gguf

    root = tmp_path_factory.mktemp("playbook")
    gguf = write_gguf(tiny_hf_model(), root / "SmolLM2-135M-Instruct.Q4_1.gguf", "llama", chat_template=True)
    size = gguf.stat().st_size
    done = _playbook("prepare", "--gguf", gguf, "--dest", root / "prepared", "--no-wheels",
                     "--max-piece-bytes", size // 2 + 1, "--state-branch", "")
    assert done.returncode == 0, done.stderr
    return root, gguf


def test_prepare_splits_into_pieces_that_fit_and_writes_the_calls(prepared):
    root, gguf = prepared
    manifest = json.loads((root / "prepared" / "manifest.json").read_text())
    assert [p["name"] for p in manifest["pieces"]] == ["piece-1", "piece-2"]
    assert sum(p["bytes"] for p in manifest["pieces"]) == manifest["bytes"] == gguf.stat().st_size
    joined = b"".join((root / "prepared" / p["name"]).read_bytes() for p in manifest["pieces"])
    assert joined == gguf.read_bytes()
    calls = (root / "prepared" / "CALLS.md").read_text()
    assert "playbook.py receive" in calls and "playbook.py job --gated" in calls and "piece-2" in calls


def test_dry_run_two_runs_then_the_job(prepared, tmp_path, monkeypatch):
    import blockgen

    root, _ = prepared
    store, out = tmp_path / "store", tmp_path / "out"
    first = _playbook("receive", "--carried", _carry(root / "prepared", tmp_path / "run1", ["manifest.json", "piece-1"]),
                      "--store", store)
    assert first.returncode == 0, first.stderr
    assert "still to come: piece-2" in first.stdout and "torch" in first.stdout  # the machine's versions
    second = _carry(root / "prepared", tmp_path / "run2", ["manifest.json", "piece-2"])
    job = _playbook("job", "--carried", second, "--store", store, "--out", out, *TINY_JOB)
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]

    returned = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert len(returned) <= 8 and all(p.count("/") <= 2 for p in returned), returned
    assert {"playbook.log", "train_log.jsonl", "benchmark.json", "distill.jsonl.xz",
            "adapter/adapter_config.json", "adapter/MODEL_CARD.md"} <= set(returned)
    monkeypatch.syspath_prepend(str(store / "site"))  # "default-ar" is now the reassembled tiny GGUF, as there
    monkeypatch.setenv("BLOCKGEN_HOME", str(store / "home"))
    lm = blockgen.load(out / "adapter", device="cpu")  # the returned adapter loads over the reassembled base
    assert lm.family.attention.value == "block_causal" and lm.family.block_size == 2
    config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert config["training"]["steps"] == 12 and config["training"]["hardware"].startswith("CPU")
    assert config["training"]["metrics"]  # the benchmark recorded its figures
    card = (out / "adapter" / "MODEL_CARD.md").read_text()
    assert "training wall time" in card and "AR mode (base)" in card
    bench = json.loads((out / "benchmark.json").read_text())
    assert [r["block"] for r in bench["rows"]] == [1, 4, 8] and len(bench["gates"]) == 3
    steps = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps] == list(range(1, 13)) and all(s["loss"] > 0 for s in steps)
    examples = [json.loads(line) for line in lzma.decompress((out / "distill.jsonl.xz").read_bytes()).splitlines()]
    assert examples and all(e["prompt"] and len(e["completion"]) >= 8 for e in examples)
    log = (out / "playbook.log").read_text()
    assert "sha256 ok" in log and "distill:" in log and "train:" in log
    assert "profile of 3 training steps" in log and "self_cpu_time_total" in log  # for the next lease's tuning

    # back here: the adapter lands as the packaged default (here a scratch target), the data waits for the next lease
    env = dict(PYTHONPATH=str(store / "site"), BLOCKGEN_HOME=str(store / "home"))
    from blockgen.runtime import PACKAGED_ADAPTER

    before = PACKAGED_ADAPTER.exists()
    kept = _playbook("land", out, "--carried", tmp_path / "kept", "--state-branch", "", **env)
    assert kept.returncode == 0, kept.stderr
    assert "not installed as the packaged default: it missed tokens/forward" in kept.stdout  # a tiny model's gates
    assert PACKAGED_ADAPTER.exists() == before and (tmp_path / "kept" / "adapter" / "adapter_config.json").is_file()
    landed = _playbook("land", out, "--target", tmp_path / "landed", "--logs", tmp_path / "logs",
                       "--carried", tmp_path / "next", "--state-branch", "", **env)
    assert landed.returncode == 0, landed.stderr
    assert (tmp_path / "landed" / "adapter_config.json").is_file() and (tmp_path / "logs" / "benchmark.json").is_file()
    assert (tmp_path / "next" / "distill.jsonl.xz").read_bytes() == (out / "distill.jsonl.xz").read_bytes()
    assert (tmp_path / "next" / "adapter" / "adapter_config.json").is_file()

    # the next lease carries the distilled data back instead of distilling again, and trains on from the adapter
    (second / "distill.jsonl.xz").write_bytes((out / "distill.jsonl.xz").read_bytes())
    shutil.copytree(tmp_path / "next" / "adapter", second / "adapter")
    again = _playbook("job", "--carried", second, "--store", store, "--out", tmp_path / "out2", *TINY_JOB)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert f"reusing the carried dataset ({len(examples):,} examples)" in again.stdout
    assert "starting from the carried adapter (12 steps" in again.stdout
    config = json.loads((tmp_path / "out2" / "adapter" / "adapter_config.json").read_text())
    assert config["training"]["started_from"][0]["steps"] == 12 and config["training"]["metrics"]
    assert config["training"]["settings"]["block_sizes"] == [2]  # the curriculum is behind it

    # or distills afresh (greedy answers to prompts past those answered before) beside the carried data, and
    # benchmarks block 8 only
    fresh = _playbook("job", "--carried", second, "--store", store, "--out", tmp_path / "out3", *TINY_JOB,
                      "--fresh-data", "--distill-temperature", "0", "--bench-blocks", "8", "--distill-offset", "8")
    assert fresh.returncode == 0, fresh.stdout[-3000:] + fresh.stderr[-3000:]
    assert "reusing the carried dataset" not in fresh.stdout
    assert f"{len(examples):,} distinct carried examples kept beside the new ones" in fresh.stdout
    assert [r["block"] for r in json.loads((tmp_path / "out3" / "benchmark.json").read_text())["rows"]] == [1, 8]
    both = lzma.decompress((tmp_path / "out3" / "distill.jsonl.xz").read_bytes()).splitlines()
    assert len(both) > len(examples) and [json.loads(x) for x in both[:len(examples)]] == examples

    # a follow-up on the same warm machine: trains on from the last run on the dataset in the store, no benchmark,
    # here with certainty forcing and suffix-masked blocks
    shutil.copytree(store / "work" / "run", tmp_path / "last")
    follow = _playbook("job", "--carried", second, "--store", store, "--out", tmp_path / "out4", *TINY_JOB,
                       "--data", store / "work" / "distill.jsonl", "--init-adapter", tmp_path / "last", "--no-bench",
                       "--certainty", "0.5", "--suffix-share", "0.5")
    assert follow.returncode == 0, follow.stdout[-3000:] + follow.stderr[-3000:]
    settings = json.loads((tmp_path / "out4" / "adapter" / "adapter_config.json").read_text())["training"]["settings"]
    assert settings["certainty"] == 0.5 and settings["suffix_share"] == 0.5
    assert f"distill: training on {store / 'work' / 'distill.jsonl'} ({len(both):,} examples)" in follow.stdout
    assert "benchmark: skipped" in follow.stdout and not (tmp_path / "out4" / "benchmark.json").exists()
    assert (tmp_path / "out4" / "adapter" / "adapter_config.json").is_file()

    # or turns the last run into a gated drafting adapter (the LoRA's shapes are the same)
    gated = _playbook("job", "--carried", second, "--store", store, "--out", tmp_path / "out5", *TINY_JOB,
                      "--data", store / "work" / "distill.jsonl", "--init-adapter", tmp_path / "last", "--no-bench",
                      "--gated")
    assert gated.returncode == 0, gated.stdout[-3000:] + gated.stderr[-3000:]
    config = json.loads((tmp_path / "out5" / "adapter" / "adapter_config.json").read_text())
    assert config["training"]["settings"]["gated"] and config["blockgen"]["gated"]
    assert config["blockgen"]["attention"] == "causal"

    # the machine runs from the source tree, not an install: the package is laid out as pyproject maps it
    assert (store / "src" / "blockgen" / "planners").resolve() == ROOT / "planners"
    assert (store / "src" / "blockgen" / "memory").resolve() == ROOT / "memory"
    packages = next(p for p in sys.path if p.endswith("site-packages"))
    # -S: no .pth files, so no editable install's finder; only what the machine's PYTHONPATH gives
    code = "import blockgen.document, blockgen.planners.outline, blockgen.memory"
    for path, ok in ((store / "src", True), (ROOT, False)):
        done = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, cwd=tmp_path,
                              env={"PYTHONPATH": os.pathsep.join([str(path), str(ROOT), packages])})
        assert (done.returncode == 0) == ok, done.stderr[-2000:]


def test_the_state_branch_keeps_the_adapter_for_a_later_session(tmp_path):
    """land commits the adapter and data onto a branch that shares no tree with main; prepare on a fresh clone
    brings them back."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("playbook", PLAYBOOK)
    playbook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(playbook)
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    (repo / "README.md").write_text("main's tree\n")
    subprocess.run(["git", "-C", str(repo), "add", "README.md"], check=True)
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "m"],
                   check=True)
    carried = tmp_path / "carried"
    (carried / "adapter").mkdir(parents=True)
    (carried / "adapter" / "adapter_config.json").write_text('{"x": 1}')
    (carried / "adapter" / "adapter-00001-of-00001.safetensors").write_bytes(bytes(range(256)) * 40)
    (carried / "distill.jsonl.xz").write_bytes(b"\xfd7zXZ data")
    (carried / "piece-1").write_bytes(b"not kept")
    first = playbook.save_state(carried, repo, "gpu-state", "lease 1")
    (carried / "adapter" / "adapter_config.json").write_text('{"x": 2}')
    second = playbook.save_state(carried, repo, "gpu-state", "lease 2")
    log = subprocess.run(["git", "-C", str(repo), "log", "--format=%H %s", "gpu-state"], capture_output=True,
                         text=True, check=True).stdout.splitlines()
    assert log == [f"{second} lease 2", f"{first} lease 1"]
    status = subprocess.run(["git", "-C", str(repo), "status", "--porcelain"], capture_output=True, text=True).stdout
    assert status == "" and (repo / "README.md").read_text() == "main's tree\n"  # main untouched

    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
    fresh = tmp_path / "fresh"
    names = playbook.restore_state(fresh, clone, "gpu-state")
    assert sorted(names) == ["adapter/adapter-00001-of-00001.safetensors", "adapter/adapter_config.json",
                             "distill.jsonl.xz"]
    for name in names:
        assert (fresh / name).read_bytes() == (carried / name).read_bytes()
    assert playbook.restore_state(fresh, clone, "gpu-state") == []  # what is there already stays


def test_job_stops_at_once_when_the_first_piece_is_gone(prepared, tmp_path):
    root, _ = prepared
    carried = _carry(root / "prepared", tmp_path / "run2", ["manifest.json", "piece-2"])
    done = _playbook("job", "--carried", carried, "--store", tmp_path / "fresh-store", "--out", tmp_path / "out",
                     *TINY_JOB, timeout=60)
    assert done.returncode == 3
    assert "piece-1 of the GGUF is not on this machine" in done.stderr and "given back" in done.stderr
    assert not (tmp_path / "out" / "train_log.jsonl").exists()


def test_a_damaged_piece_is_refused(prepared, tmp_path):
    root, _ = prepared
    carried = _carry(root / "prepared", tmp_path / "run1", ["manifest.json", "piece-1"])
    data = bytearray((carried / "piece-1").read_bytes())
    data[100] ^= 0xFF
    (carried / "piece-1").write_bytes(bytes(data))
    done = _playbook("receive", "--carried", carried, "--store", tmp_path / "store", timeout=60)
    assert done.returncode == 3 and "does not match the manifest" in done.stderr


def test_engine_call_measures_forwards_against_the_bound_and_runs_the_gpu_tests(tmp_path):
    """The engine call (no GGUF: random weights at real shapes) dry-run on CPU at toy shapes: the speed table comes
    back as JSON and the GPU tests run (skipped here, without CUDA)."""
    carried = tmp_path / ".gpu"
    carried.mkdir()
    out = tmp_path / "out"
    done = _playbook("engine", "--carried", carried, "--store", tmp_path / "store", "--out", out, "--device", "cpu",
                     "--", "--tiny", "--shapes", "sdar-1.7b", "--contexts", "32", "--batches", "1", "2",
                     "--block", "8", "--repeats", "1")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = json.loads((out / "engine_speed.json").read_text())["rows"]
    assert [(r["shape"], r["batch"], r["context"]) for r in rows] == [("sdar-1.7b", 1, 32), ("sdar-1.7b", 2, 32)]
    assert all(r["ms"] > 0 and 0 < r["bound_ms"] and r["kv_bytes"] > 0 for r in rows)
    log = (out / "engine.log").read_text()
    assert "engine speed (exit 0)" in log and "GPU tests (exit 0)" in log and "skipped" in log
