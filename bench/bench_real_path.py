"""LoRA training as users run it: a ComfyUI v0.33 server, Load Checkpoint on an LTX-2.3 file, workflow 2 queued.

Device call (one of at most 10 minutes; carry .gpu, see "Device set-up" below). fp8 first, bf16 in a second call:

    set -o pipefail; tar -xzf .gpu/comfyui-v0.33.tar.gz -C .gpu && pip install --no-deps --no-index -q \
      .gpu/wheels/*.whl && PYTHONUNBUFFERED=1 timeout 590 python3 bench/bench_real_path.py --comfyui .gpu/ComfyUI \
      --dtypes fp8 --budget-s 540 2>&1 | tee $OUT/log; cp -r bench/results $OUT/ 2>/dev/null; true
    # second call: the same with --dtypes bf16 (its 43 GB file and bf16 model take longer; fewer rows fit)

CPU check (tiny model, ComfyUI --cpu, about two minutes):

    .venv/bin/python bench/bench_real_path.py --tiny --device cpu --warmup 1 --steps 2 --dtypes fp8 --rows default no-dynamic@24

What it does, per weight dtype (``--dtypes``):
1. writes a random-weight LTX-2.3 checkpoint in the layout users download (``real_path_files.write_checkpoint``:
   fp8 = Lightricks' scaled-fp8 file, float8 block weights + ``weight_scale``/``input_scale`` + the
   ``_quantization_metadata`` header ComfyUI turns into QuantizedTensor layers; bf16 = every weight bf16),
   streamed tensor by tensor, and a latent cache at 960x544x49 (``--tiny``: 3 latent frames of 4x6) in the pack's
   cache format (audio latents too once the cache format has them);
2. runs the matching in-process row (``bench_train_gpu``'s model building and training loop, in a subprocess) for the
   ratio, unless ``--no-inprocess``;
3. for each row of ``--rows`` (``default`` = ComfyUI's default flags, on NVIDIA dynamic VRAM / comfy-aimdo;
   ``no-dynamic`` = ``--disable-dynamic-vram``; ``@24`` = a 24 GiB card emulated: ``--reserve-vram`` total-24 for
   ComfyUI and aimdo, plus ``torch.cuda.set_per_process_memory_fraction`` called at start-up by a small custom node
   written into the temporary base directory (never into the pack)) starts ``main.py`` with the pack linked into
   ``custom_nodes``, converts ``workflows/2_train_lora_from_cache.json`` to an API prompt (dataset/cache/text
   encoder nodes replaced by the support node that opens the written cache; previews off), queues it over HTTP,
   follows ``GET /ltxlora/progress`` and ``/history``, samples the server's RSS (psutil) and the driver's figures
   (``nvidia-smi``: this PID's ``used_memory`` and the device's ``memory.used``);
4. prints a table and writes ``bench/results/real_path.json`` (and ``$OUT/real_path.json``): one record per row.

s/step is the median of the Train node's per-step compute time (``seconds`` of its progress events) after
``--warmup`` steps; ``s_per_step_wall`` the median of the gaps between step events seen by polling (0.25 s). Peak
VRAM "torch" is the node's ``max_memory_allocated``; "node" is the figure the node shows (driver per-process when it
can read it, see ``trainer_core.gpu_memory``); "smi" is nvidia-smi's per-process peak sampled once a second.
Rows that no longer fit ``--budget-s`` are dropped with a message.

Device set-up (here, once; .gpu is git-ignored, keep it under 60 MB): .gpu/comfyui-v0.33.tar.gz (from
../shared/comfyui) and .gpu/wheels: comfy-aimdo 0.4.13 and pydantic-core 2.50.5 (cp312 manylinux, with the
--platform flags), peft 0.22.0, ltx-core 1.0.0, pydantic 2.14.4, annotated-types 0.8.0, typing-inspection 0.4.5
(pure Python). comfy-kitchen 0.2.31 is still needed: its cp312 wheel is ~58 MB with CUDA/HIP .so files, so it must
be carried stripped of them (as docs/benchmarks.md's earlier runs did). The ComfyUI *server* (main.py) also needs
its own requirements (aiohttp, alembic, SQLAlchemy, comfyui-frontend-package, ...): check the device image first.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench")]

GIB = 2**30
PACK = "ltx_lora_trainer"
WORKFLOW = "2_train_lora_from_cache.json"
FULL = {"video": (128, 7, 17, 30), "audio": (8, 51, 16), "text_tokens": 256}  # 960x544x49
TINY = {"video": (128, 3, 4, 6), "audio": (8, 9, 16), "text_tokens": 16}
DEFAULT_ROWS = ["default", "no-dynamic", "default@24", "no-dynamic@24", "default@32"]
SUPPORT_NODE = '''"""Benchmark support written by bench/bench_real_path.py into a temporary ComfyUI base directory.

Not part of the pack. At import (before any model loads) it caps torch's allocator at LTXLORA_BENCH_CAP_GIB, as on
a smaller card; its node opens a latent cache folder with the pack's own CachedData.
"""
import logging
import os
import sys
from pathlib import Path

import torch

_CAP = os.environ.get("LTXLORA_BENCH_CAP_GIB")
if _CAP and torch.cuda.is_available():
    _total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, float(_CAP) * 2**30 / _total), 0)
    logging.info("ltxlora bench: torch allocator capped at %s GiB of %.1f", _CAP, _total / 2**30)


class LtxLoraBenchCachedData:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"folder": ("STRING", {"default": ""})}}

    RETURN_TYPES = ("LTX_TRAINING_DATA",)
    FUNCTION = "load"
    CATEGORY = "ltxlora_bench"

    def load(self, folder):
        pack = Path(os.environ["LTXLORA_BENCH_PACK"]).resolve()
        for name, mod in list(sys.modules.items()):
            path = getattr(mod, "__file__", None) or ""
            if name.endswith("trainer_core.cache.reader") and Path(path).resolve().parent.parent.parent == pack:
                return (mod.CachedData(Path(folder)),)
        raise RuntimeError(f"the LTX LoRA pack at {pack} is not loaded in this ComfyUI")


NODE_CLASS_MAPPINGS = {"LtxLoraBenchCachedData": LtxLoraBenchCachedData}
'''


@dataclass
class Row:
    mode: str  # "default" | "no-dynamic" | "inprocess"
    dtype: str  # "fp8" | "bf16"
    cap_gib: float | None = None
    audio: bool = True  # audio+video where the cache has audio; False: the video-only cache (":video" rows)
    s_per_step: float | None = None
    s_per_step_wall: float | None = None
    peak_vram_gib: float | None = None  # torch's counters (max_memory_allocated) in the training process
    peak_vram_node_gib: float | None = None  # what the Train node shows
    peak_vram_node_source: str | None = None
    peak_vram_smi_gib: float | None = None  # nvidia-smi, this process
    peak_device_used_gib: float | None = None  # nvidia-smi, whole device
    host_rss_gib: float | None = None  # the server and its children (torch.compile's workers) summed
    host_rss_server_gib: float | None = None  # the server process alone
    ratio_to_inprocess: float | None = None
    steps_timed: int = 0
    first_step_s: float | None = None
    seconds: float | None = None  # the whole row, server start to exit
    status: str = "not run"
    note: str = ""
    losses: list[float] = field(default_factory=list)


# -- helpers -----------------------------------------------------------------------------------------------------
def _get_json(url: str, data: dict | None = None, timeout: float = 30) -> dict:
    body = None if data is None else json.dumps(data).encode()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"} if body else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as err:  # ComfyUI says why in the body (e.g. prompt validation)
        raise RuntimeError(f"{url}: HTTP {err.code}: {err.read().decode(errors='replace')[:2000]}") from None


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _smi(query: list[str]) -> list[list[str]]:
    """nvidia-smi CSV rows (no header, no units); empty without the tool."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", *query, "--format=csv,noheader,nounits"], capture_output=True,
                             text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [[c.strip() for c in line.split(",")] for line in out.splitlines() if line.strip()]


def device_total_gib() -> float | None:
    rows = _smi(["--query-gpu=memory.total"])
    return float(rows[0][0]) / 1024 if rows else None


class Sampler:
    """Peaks of a process tree's RSS (psutil) and of the driver's per-process and device-wide memory (nvidia-smi)."""

    def __init__(self, pid: int, cuda: bool) -> None:
        import psutil

        self.proc, self.cuda = psutil.Process(pid), cuda
        self.rss = 0
        self.rss_server = 0
        self.smi_pid: float | None = None
        self.device_used: float | None = None
        self._next_smi = 0.0

    def sample(self) -> None:
        import psutil

        try:
            own = self.proc.memory_info().rss
            rss = own + sum(c.memory_info().rss for c in self.proc.children(recursive=True))
            self.rss, self.rss_server = max(self.rss, rss), max(self.rss_server, own)
        except psutil.Error:
            pass
        if not self.cuda or time.monotonic() < self._next_smi:
            return
        self._next_smi = time.monotonic() + 1.0
        for pid, used in _smi(["--query-compute-apps=pid,used_memory"]):
            if pid.isdigit() and int(pid) == self.proc.pid and used.replace(".", "").isdigit():
                self.smi_pid = max(self.smi_pid or 0.0, float(used) / 1024)
        dev = _smi(["--query-gpu=memory.used"])
        if dev and dev[0][0].replace(".", "").isdigit():
            self.device_used = max(self.device_used or 0.0, float(dev[0][0]) / 1024)


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


# -- files -------------------------------------------------------------------------------------------------------
def prepare_files(args, work: Path, dtype: str) -> Path:
    """The checkpoint for ``dtype`` (written in a subprocess: the parent stays off the GPU)."""
    ckpt = work / "base" / "models" / "checkpoints" / f"ltx-2.3-bench-{dtype}.safetensors"
    if not ckpt.exists():
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        _run_child(args, ["--_write", dtype, str(ckpt)], timeout=600)
        print(f"wrote {ckpt.name}: {ckpt.stat().st_size / 1e9:.2f} GB in {time.perf_counter() - t0:.1f} s",
              flush=True)
    return ckpt


def _child_write(args, dtype: str, path: Path) -> None:
    import torch

    from gpu_models import model_config
    from real_path_files import write_checkpoint

    device = torch.device("cuda" if args.device == "cuda" else "cpu")
    info = write_checkpoint(path, model_config(full=not args.tiny), dtype, device)
    print(f"checkpoint {path.name}: {info}", flush=True)


def _run_child(args, extra: list[str], timeout: float) -> None:
    cmd = [sys.executable, str(Path(__file__).resolve()), *extra, "--device", args.device]
    cmd += ["--tiny"] if args.tiny else []
    cmd += ["--warmup", str(args.warmup), "--steps", str(args.steps)]
    subprocess.run(cmd, check=True, timeout=timeout, env=_env(args))


def _env(args, cap: float | None = None) -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1", LTXLORA_BENCH_PACK=str(REPO))
    env.setdefault("TORCHINDUCTOR_CACHE_DIR", str(args.work / "inductor"))  # shared: later rows reuse kernels
    env.pop("LTXLORA_BENCH_CAP_GIB", None)
    if cap is not None:
        env["LTXLORA_BENCH_CAP_GIB"] = str(cap)
    if args.comfyui:
        env["COMFYUI_PATH"] = str(args.comfyui)
    return env


# -- the in-process row ------------------------------------------------------------------------------------------
def _child_inprocess(args, dtype: str, out: Path) -> None:
    """``bench_train_gpu``'s own row for ``dtype`` on the cache's geometry, result to ``out`` (JSON)."""
    import torch

    import bench_train_gpu as b
    from gpu_models import boot_comfyui, default_comfyui, model_config, training_data

    device = torch.device("cuda" if args.device == "cuda" else "cpu")
    boot_comfyui(args.comfyui or default_comfyui(), cpu=device.type == "cpu")
    config = model_config(full=not args.tiny)
    geo = TINY if args.tiny else FULL
    patcher = b.build_model(config, device, torch.float8_e4m3fn if dtype == "fp8" else torch.bfloat16)
    audio_steps = geo["audio"][1] if args.audio else 0
    data = training_data(geo["video"], audio_steps, geo["text_tokens"], b._text_width(config))
    b.reset_peak(device)
    timer, _, _ = b.train_ours(patcher, data, args.warmup + args.steps, device)
    peak, _ = b.peak_gib(device)
    out.write_text(json.dumps({"s_per_step": timer.median(args.warmup), "peak_gib": peak,
                               "losses": timer.losses, "note": patcher.load_note}))


def run_inprocess(args, dtype: str) -> Row:
    row = Row("inprocess", dtype, audio=args.audio)
    out = args.work / f"inprocess_{dtype}.json"
    t0 = time.perf_counter()
    extra = ["--_inprocess", dtype, str(out)] + ([] if args.audio else ["--no-audio"])
    extra += ["--comfyui", str(args.comfyui)] if args.comfyui else []
    try:
        _run_child(args, extra, timeout=max(30.0, args.deadline - time.monotonic()))
        res = json.loads(out.read_text())
        row.s_per_step, row.peak_vram_gib, row.losses = res["s_per_step"], res["peak_gib"], res["losses"]
        row.status, row.note = "ok", f"built in-process (fp8: plain e4m3fn + manual cast); {res['note']}"
        row.steps_timed = args.steps
    except (subprocess.SubprocessError, OSError, ValueError, KeyError) as err:
        row.status, row.note = "failed", str(err)[-400:]
    row.seconds = time.perf_counter() - t0
    return row


# -- the server rows ---------------------------------------------------------------------------------------------
def make_base(work: Path) -> Path:
    base = work / "base"
    (base / "custom_nodes").mkdir(parents=True, exist_ok=True)
    link = base / "custom_nodes" / PACK
    if not link.exists():
        link.symlink_to(REPO, target_is_directory=True)
    (base / "custom_nodes" / "ltxlora_bench_support.py").write_text(SUPPORT_NODE)
    return base


class _Spec:
    """What ``ui_to_api`` needs of a node class, from the server's ``/object_info``."""

    def __init__(self, info: dict) -> None:
        self.info = info
        self.RETURN_TYPES = tuple(info.get("output") or ())
        self.RETURN_NAMES = tuple(info.get("output_name") or ())

    def INPUT_TYPES(self) -> dict:  # noqa: N802 - ComfyUI's name
        return self.info.get("input") or {}


def build_prompt(url: str, ckpt: str, cache: Path, steps: int, name: str) -> dict:
    """Workflow 2 as an API prompt: the user's graph with the dataset/cache/text-encoder part replaced by the
    support node that opens ``cache``, previews off, ``steps`` steps and one LoRA save at the end."""
    from tests.workflow_support import load_workflow, ui_to_api

    classes = {k: _Spec(v) for k, v in _get_json(f"{url}/object_info", timeout=120).items()}
    prompt = ui_to_api(load_workflow(WORKFLOW), classes)
    by_type = {v["class_type"]: k for k, v in prompt.items()}
    for drop in ("LTXAVTextEncoderLoader", "LtxLoraLoadDataset", "LtxLoraCacheLatents"):
        prompt.pop(by_type[drop])
    for key in [k for k, v in prompt.items() if v["class_type"] == "PreviewAny"]:
        if str(prompt[key]["inputs"]["source"][0]) not in prompt:
            prompt.pop(key)
    train = prompt[by_type["LtxLoraTrain"]]["inputs"]
    train.pop("clip", None)
    train.pop("vae", None)
    prompt["900"] = {"class_type": "LtxLoraBenchCachedData", "inputs": {"folder": str(cache)}}
    train.update(training_data=["900", 0], every=steps, name=name)
    prompt[by_type["CheckpointLoaderSimple"]]["inputs"]["ckpt_name"] = ckpt
    prompt[by_type["LtxLoraOptimizerSettings"]]["inputs"]["steps"] = steps
    prompt[by_type["LtxLoraPreviewSettings"]]["inputs"]["every"] = 0
    return prompt


def _wait_up(url: str, proc: subprocess.Popen, log: Path, deadline: float) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ComfyUI exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            _get_json(f"{url}/system_stats", timeout=5)
            return
        except (OSError, ValueError):
            time.sleep(0.5)
    raise TimeoutError("ComfyUI did not answer in time")


def run_server_row(args, row: Row, ckpt: Path, cache: Path, total_gib: float | None) -> None:
    cache = cache if row.audio else args.video_cache
    base = make_base(args.work)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, str(args.comfyui_root / "main.py"), "--listen", "127.0.0.1", "--port", str(port),
           "--base-directory", str(base), "--disable-auto-launch"]
    cmd += ["--cpu"] if args.device == "cpu" else []
    cmd += ["--disable-dynamic-vram"] if row.mode == "no-dynamic" else []
    if args.front_end_root:  # the bench never opens the UI; a placeholder spares carrying the frontend package
        args.front_end_root.mkdir(parents=True, exist_ok=True)
        (args.front_end_root / "index.html").write_text("<html>bench</html>")
        cmd += ["--front-end-root", str(args.front_end_root)]
    if row.cap_gib is not None and total_gib:
        cmd += ["--reserve-vram", f"{max(0.0, total_gib - row.cap_gib):.2f}"]
    log = args.out / f"server_{row.dtype}_{row.mode}_{row.cap_gib or 'nocap'}{'' if row.audio else '_video'}.log"
    t0 = time.perf_counter()
    row_deadline = min(args.deadline, time.monotonic() + args.row_timeout)
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=args.comfyui_root, stdout=out, stderr=subprocess.STDOUT,
                                env=_env(args, row.cap_gib))
    sampler = Sampler(proc.pid, args.device == "cuda")
    try:
        _wait_up(url, proc, log, row_deadline)
        steps = args.warmup + args.steps
        prompt = build_prompt(url, ckpt.name, cache, steps, f"bench_{row.dtype}_{row.mode}_{uuid.uuid4().hex[:6]}")
        queued = _get_json(f"{url}/prompt", {"prompt": prompt, "client_id": uuid.uuid4().hex})
        pid = queued["prompt_id"]
        seen: dict[int, float] = {}
        queued_at = time.monotonic()
        points: list[dict] = []
        while True:
            sampler.sample()
            if proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {proc.returncode} during the run")
            progress = _get_json(f"{url}/ltxlora/progress")
            points = progress.get("points") or points
            for p in points:
                seen.setdefault(p["step"], time.monotonic())
            hist = _get_json(f"{url}/history/{pid}").get(pid)
            if hist and hist.get("status", {}).get("completed") is not None and (
                hist["status"].get("status_str") in ("success", "error")
            ):
                break
            if time.monotonic() > row_deadline:
                raise TimeoutError(f"row past its time ({len(points)} of {steps} steps done)")
            time.sleep(0.25)
        status = hist["status"]
        if status.get("status_str") != "success":
            errors = [m for m in status.get("messages", []) if m[0] == "execution_error"]
            detail = errors[0][1] if errors else status
            raise RuntimeError(f"prompt failed: {json.dumps(detail)[:1500]}")
        _summarise(row, points, seen, queued_at, args.warmup)
        row.status = "ok"
    except (OSError, RuntimeError, TimeoutError, ValueError, KeyError) as err:
        row.status, row.note = "failed", f"{type(err).__name__}: {str(err)[-1500:]}"
        print(f"row {row.mode} {row.dtype} cap {row.cap_gib}: {row.note}\n(server log: {log})", flush=True)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    row.seconds = time.perf_counter() - t0
    row.host_rss_gib, row.host_rss_server_gib = sampler.rss / GIB, sampler.rss_server / GIB
    row.peak_vram_smi_gib, row.peak_device_used_gib = sampler.smi_pid, sampler.device_used


def _summarise(row: Row, points: list[dict], seen: dict[int, float], queued_at: float, warmup: int) -> None:
    timed = [p for p in points if p["step"] > warmup]
    row.steps_timed = len(timed)
    row.s_per_step = _median([p["seconds"] for p in timed])
    steps = sorted(seen)
    gaps = [seen[s] - seen[s - 1] for s in steps if s > warmup + 1 and s - 1 in seen]
    row.s_per_step_wall = _median(gaps)
    row.first_step_s = seen[steps[0]] - queued_at if steps else None
    row.losses = [p["loss"] for p in points]
    last = points[-1] if points else {}
    row.peak_vram_gib = last.get("gpu_torch_gib", last.get("gpu_gib"))
    row.peak_vram_node_gib = last.get("gpu_gib")
    row.peak_vram_node_source = last.get("gpu_source")


# -- main --------------------------------------------------------------------------------------------------------
def _rows(args) -> list[Row]:
    rows = []
    for dtype in args.dtypes:
        for spec in args.rows:
            spec, _, streams = spec.partition(":")
            mode, _, cap = spec.partition("@")
            if mode not in ("default", "no-dynamic") or streams not in ("", "video"):
                raise SystemExit(f"--rows: unknown row {spec!r} (default or no-dynamic, then @GIB and/or :video)")
            rows.append(Row(mode, dtype, float(cap) if cap else None, audio=args.audio and streams != "video"))
    return rows


def print_table(rows: list[Row], device: str) -> None:
    def f(v, fmt="{:.3f}"):
        return "n/a" if v is None else fmt.format(v)

    print(f"\nreal-path benchmark on {device}")
    print("| mode | dtype | streams | cap GiB | s/step | wall s/step | peak torch GiB | node GiB (source) | smi GiB | device GiB "
          "| host RSS GiB (server alone) | x in-process | status |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        node = f"{f(r.peak_vram_node_gib, '{:.2f}')} ({r.peak_vram_node_source or '-'})"
        streams = "audio+video" if r.audio else "video"
        print(f"| {r.mode} | {r.dtype} | {streams} | {f(r.cap_gib, '{:g}')} | {f(r.s_per_step)} | {f(r.s_per_step_wall)} | "
              f"{f(r.peak_vram_gib, '{:.2f}')} | {node} | {f(r.peak_vram_smi_gib, '{:.2f}')} | "
              f"{f(r.peak_device_used_gib, '{:.2f}')} | {f(r.host_rss_gib, '{:.2f}')} ({f(r.host_rss_server_gib, '{:.2f}')}) | "
              f"{f(r.ratio_to_inprocess, '{:.2f}')} | {r.status} |")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="tiny model and cache (debugging on the CPU)")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda", help="cpu: ComfyUI --cpu")
    p.add_argument("--comfyui", type=Path, default=None, help="ComfyUI tree (default: as bench_train_gpu finds it)")
    p.add_argument("--dtypes", nargs="+", choices=["fp8", "bf16"], default=["fp8", "bf16"])
    p.add_argument("--front-end-root", type=Path, default=None,
                   help="serve this placeholder folder as the web UI (where comfyui-frontend-package is absent)")
    p.add_argument("--rows", nargs="+", default=DEFAULT_ROWS,
                   help="server rows in order: default|no-dynamic, then @GIB (a capped card) and/or :video (video-only)")
    p.add_argument("--baseline-dtype", choices=["fp8", "bf16"], default=None,
                   help="dtype of the in-process row the ratios divide by (default: the rows' own dtype)")
    p.add_argument("--keep-checkpoint", action="store_true",
                   help="leave the written checkpoint in --work for a later call on the same machine")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=8, help="timed steps after the warm-up")
    p.add_argument("--no-inprocess", action="store_true", help="skip the in-process rows (ratio left null)")
    p.add_argument("--no-audio", dest="audio", action="store_false",
                   help="video-only (default: audio too where the cache has audio latents)")
    p.add_argument("--budget-s", type=float, default=540, help="drop rows that would end after this")
    p.add_argument("--row-timeout", type=float, default=330, help="most seconds one server row may take")
    p.add_argument("--min-row-s", type=float, default=60, help="a row starts only with this much budget left")
    p.add_argument("--work", type=Path, default=None, help="where the checkpoint, cache and base dir go (temp)")
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", REPO / "out" / "bench_real_path")))
    p.add_argument("--results", type=Path, default=REPO / "bench" / "results" / "real_path.json")
    p.add_argument("--_write", nargs=2, metavar=("DTYPE", "PATH"), help=argparse.SUPPRESS)
    p.add_argument("--_inprocess", nargs=2, metavar=("DTYPE", "JSON"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._write:
        _child_write(args, args._write[0], Path(args._write[1]))
        return 0
    if args._inprocess:
        _child_inprocess(args, args._inprocess[0], Path(args._inprocess[1]))
        return 0

    args.deadline = time.monotonic() + args.budget_s
    from gpu_models import default_comfyui

    args.comfyui_root = (args.comfyui or default_comfyui()).resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    own_work = args.work is None
    args.work = Path(tempfile.mkdtemp(prefix="ltxlora_real_path_")) if own_work else args.work
    args.work.mkdir(parents=True, exist_ok=True)
    geo = TINY if args.tiny else FULL
    smi = _smi(["--query-gpu=name,driver_version"]) if args.device == "cuda" else []
    device = f"{smi[0][0]} (driver {smi[0][1]})" if smi else "cpu"
    total = device_total_gib() if args.device == "cuda" else None
    print(f"device {device}; total {total} GiB; work dir {args.work}", flush=True)

    from gpu_models import model_config
    from real_path_files import write_cache

    config = model_config(full=not args.tiny)
    width = config["transformer"]["cross_attention_dim"] + config["transformer"]["audio_cross_attention_dim"]
    cache = args.work / "cache"
    cache_info = write_cache(cache, geo["video"], geo["text_tokens"], width, geo["audio"] if args.audio else None)
    from trainer_core.cache.reader import CachedData

    args.audio = args.audio and CachedData(cache)[0].audio is not None
    print(f"cache {cache}: {cache_info}; the trainer reads audio from it: {args.audio}", flush=True)
    args.video_cache = cache
    if args.audio and any(spec.endswith(":video") for spec in args.rows):
        args.video_cache = args.work / "cache_video"
        write_cache(args.video_cache, geo["video"], geo["text_tokens"], width, None)

    results: list[Row] = []
    planned = _rows(args)
    try:
        for dtype in args.dtypes:
            if time.monotonic() + args.min_row_s > args.deadline:
                print(f"DROPPED every {dtype} row: {args.deadline - time.monotonic():.0f} s of budget left", flush=True)
                results += [r for r in planned if r.dtype == dtype]
                continue
            ckpt = prepare_files(args, args.work, dtype)
            base_row = None
            if not args.no_inprocess:
                base_row = run_inprocess(args, args.baseline_dtype or dtype)
                results.append(base_row)
                print(f"in-process {base_row.dtype}: {base_row.s_per_step} s/step ({base_row.status}) {base_row.note}",
                      flush=True)
            for row in (r for r in planned if r.dtype == dtype):
                left = args.deadline - time.monotonic()
                if left < args.min_row_s:
                    row.status = "dropped"
                    row.note = f"only {left:.0f} s of the budget left"
                    print(f"DROPPED {row.mode} {dtype} cap {row.cap_gib}: {row.note}", flush=True)
                else:
                    run_server_row(args, row, ckpt, cache, total)
                    print(f"{row.mode} {dtype} cap {row.cap_gib}{'' if row.audio else ' video-only'}: {row.s_per_step} s/step, {row.seconds:.0f} s, "
                          f"{row.status}", flush=True)
                if base_row and base_row.s_per_step and row.s_per_step and base_row.audio == row.audio:
                    row.ratio_to_inprocess = row.s_per_step / base_row.s_per_step
                results.append(row)
            if not args.keep_checkpoint:
                ckpt.unlink(missing_ok=True)  # the device's disk holds one 22-43 GB file at a time
    finally:
        record = {"device": device, "total_gib": total, "tiny": args.tiny, "geometry": geo, "audio": args.audio,
                  "warmup": args.warmup, "steps": args.steps, "rows": [asdict(r) for r in results]}
        for path in (args.results, args.out / "real_path.json"):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(record, indent=1))
        print_table(results, device)
        if own_work:
            shutil.rmtree(args.work, ignore_errors=True)
    return 0 if all(r.status in ("ok", "dropped") for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
