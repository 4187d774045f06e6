"""Trainer data path: peak memory of ``pcc train`` on audio data directories, and image resizing against Pillow.

Memory: one-second 16 kHz clips (float32, 64 KiB each) are written to a temporary data directory
(``labels.npy`` + ``audio.npy``); ``pcc train --data-dir D --modalities audio --epochs 1 --quiet`` runs in a
subprocess and its peak resident memory is read with ``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`` (one
child per measurement, so the maximum is that run's).  The target is memory flat in the number of clips.

Resize: ``ImageProcessor.resize`` (separable resampling matrices, two GEMMs per batch) against Pillow on the
same float32 images (mode "F", per image and channel; BOX when shrinking by an integer factor and BILINEAR
when enlarging, the filters that give the same numbers) and against Pillow's uint8 RGB path (rounds to 8 bits),
one thread, minimum of repeats.

    .venv/bin/python bench/bench_trainer_data.py [--quick] [--clips 4000 20000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))


def make_audio_dir(path: Path, clips: int, samples: int = 16000, seed: int = 0) -> Path:
    """``clips`` noisy tones of ``samples`` float32 samples, labels 0..9, written in chunks."""
    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, clips)
    np.save(path / "labels.npy", labels)
    out = np.lib.format.open_memmap(path / "audio.npy", mode="w+", dtype=np.float32, shape=(clips, samples))
    t = np.arange(samples) / 16000
    for a in range(0, clips, 500):
        b = min(a + 500, clips)
        f = 200.0 * 1.2 ** labels[a:b, None]
        out[a:b] = (0.5 * np.sin(2 * np.pi * f * t) + 0.1 * rng.standard_normal((b - a, samples))).astype(np.float32)
    out.flush()
    del out
    return path


def peak_rss_mib(data_dir: Path, epochs: int = 1, pcc: str | None = None) -> tuple[float, float, str]:
    """Peak RSS (MiB) and wall time of one ``pcc train`` run in a child process; also the command.  ``pcc``:
    another ``pcc`` executable to measure (e.g. an older checkout's, for comparison)."""
    pcc = pcc or str(Path(sys.executable).with_name("pcc"))
    cmd = [pcc, "train", "--data-dir", str(data_dir), "--epochs", str(epochs), "--threads", "1"]
    if "--quiet" in subprocess.run([pcc, "train", "--help"], capture_output=True, text=True).stdout:
        cmd += ["--modalities", "audio", "--quiet"]  # (an older pcc has neither; the directory holds audio only)
    code = (
        "import resource, subprocess, sys, time; t = time.perf_counter(); "
        "r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, time.perf_counter() - t, r.returncode); "
        "sys.stderr.write(r.stderr)"
    )
    res = subprocess.run([sys.executable, "-c", code, *cmd], capture_output=True, text=True, check=True)
    kib, wall, rc = res.stdout.split()
    if rc != "0":
        raise RuntimeError(f"pcc train failed: {res.stderr}")
    shown = " ".join(["pcc", *cmd[1:3], "D", *cmd[4:]])
    return int(kib) / 1024, float(wall), shown


def measure_memory(clip_counts: list[int], pcc: str | None = None) -> list[dict]:
    out = []
    for n in clip_counts:
        with tempfile.TemporaryDirectory(prefix="pcc-bench-audio-") as tmp:
            d = make_audio_dir(Path(tmp) / "d", n)
            mib, wall, cmd = peak_rss_mib(d, pcc=pcc)
            out.append({"clips": n, "peak_rss_mib": mib, "wall_s": wall, "file_mib": n * 16000 * 4 / 2**20, "cmd": cmd})
            print(f"{n:6d} clips ({n * 16000 * 4 / 2**20:7.0f} MiB of audio): peak RSS {mib:7.1f} MiB, {wall:.1f} s")
    return out


def _pil_float(x: np.ndarray, size: tuple[int, int]):
    from PIL import Image

    n, c, h, w = x.shape
    filt = Image.Resampling.BOX if size[0] < h else Image.Resampling.BILINEAR
    out = np.empty((n, c, *size), np.float32)
    for i in range(n):
        for k in range(c):
            out[i, k] = np.asarray(Image.fromarray(x[i, k], mode="F").resize((size[1], size[0]), filt))
    return out


def _pil_uint8(xu: np.ndarray, size: tuple[int, int]):
    from PIL import Image

    filt = Image.Resampling.BOX if size[0] < xu.shape[1] else Image.Resampling.BILINEAR
    return np.stack([np.asarray(Image.fromarray(im, mode="RGB").resize((size[1], size[0]), filt)) for im in xu])


def _best(fn, reps: int) -> float:
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def measure_resize(quick: bool = False) -> list[dict]:
    from threadpoolctl import threadpool_limits

    from pcc.trainer.multimodal import ImageProcessor

    rng = np.random.default_rng(0)
    cases = [(256, 32, 16), (64, 224, 16), (256, 16, 32), (32, 224, 112)]
    reps = 3 if quick else 7
    out = []
    with threadpool_limits(1):
        for n, h, s in cases:
            xu = rng.integers(0, 256, (n, h, h, 3)).astype(np.uint8)
            x = np.ascontiguousarray((xu.astype(np.float32) / 255).transpose(0, 3, 1, 2))
            ip = ImageProcessor(size=s)
            t_pcc = _best(lambda ip=ip, x=x: ip.resize(x), reps)
            t_f = _best(lambda x=x, s=s: _pil_float(x, (s, s)), reps)
            t_u8 = _best(lambda xu=xu, s=s: _pil_uint8(xu, (s, s)), reps)
            err = float(np.abs(ip.resize(x) - _pil_float(x, (s, s))).max())
            out.append({"case": f"{n}x3x{h}x{h} -> {s}x{s}", "pcc_ms": 1e3 * t_pcc, "pillow_f_ms": 1e3 * t_f,
                        "pillow_u8_ms": 1e3 * t_u8, "max_diff": err})  # fmt: skip
            print(f"resize {out[-1]['case']:22s} pcc {1e3 * t_pcc:7.1f} ms  Pillow float {1e3 * t_f:7.1f} ms  "
                  f"Pillow uint8 {1e3 * t_u8:7.1f} ms  max |pcc - Pillow float| {err:.1e}")  # fmt: skip
    return out


def rows(quick: bool = False) -> list:
    """Rows for bench/run_all.py: audio peak memory for two clip counts, resize time against Pillow."""
    from common import PY, Row

    counts = [1000, 4000] if quick else [4000, 20000]
    mem = measure_memory(counts)
    cmd = f"{PY} bench/bench_trainer_data.py" + (" --quick" if quick else "")
    out = [
        Row(
            f"pcc train peak memory, audio data dir of {r['clips']:,} one-second clips ({r['file_mib']:,.0f} MiB)",
            f"{r['peak_rss_mib']:.0f} MiB ({r['wall_s']:.0f} s, 1 epoch)",
            "-",
            None,
            "flat in the number of clips",
            cmd,
        )
        for r in mem
    ]
    for r in measure_resize(quick):
        out.append(
            Row(
                f"image resize {r['case']} (float32, 1 thread, min of runs)",
                f"{r['pcc_ms']:.1f} ms",
                f"Pillow float32: {r['pillow_f_ms']:.1f} ms (uint8 RGB: {r['pillow_u8_ms']:.1f} ms)",
                r["pillow_f_ms"] / r["pcc_ms"],
                "",
                cmd,
            )
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1,000 and 4,000 clips, fewer resize repeats")
    ap.add_argument("--clips", type=int, nargs="+", help="clip counts to measure (default 4000 20000)")
    ap.add_argument("--pcc", help="measure this pcc executable instead (e.g. another checkout's .venv/bin/pcc)")
    ap.add_argument("--no-resize", action="store_true")
    args = ap.parse_args()
    os.chdir(ROOT)
    measure_memory(args.clips or ([1000, 4000] if args.quick else [4000, 20000]), args.pcc)
    if not args.no_resize:
        measure_resize(args.quick)


if __name__ == "__main__":
    main()
