"""Profile of the main job: ``linstab report`` cold (empty cache) and cached, in one run.

Runs ``linstab report ... --profile`` twice in fresh processes on a fresh cache folder: first
cold, then again on the filled cache (the cached rerun), and writes one JSON with both wall
times, both profiles' summaries (seconds per section, figure, panel, route, attack; see
:func:`linstab.io.profile.profile_summary`), the cache hits/misses and an environment record.

Run (the issue's configuration: the full report on ResNet-56, 20 images, 2 cores, quiet machine):

    LINSTAB_WEIGHTS_DIR=../shared/weights python benchmarks/report_profile.py \
        --label after --out benchmarks/results/report_profile_after.json -- --model resnet56-akamaster

Everything after ``--`` goes to ``linstab report`` unchanged. Times on a machine shared with
other jobs are upper bounds: the JSON records the load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _env import environment  # noqa: E402


def _run(cmd: list[str], env: dict) -> tuple[float, int, float]:
    """Wall seconds, exit code and CPU seconds (user + system) of ``cmd`` and every process it
    waited for (its workers and background processes)."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    rc = subprocess.call(cmd, env=env)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, rc, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)


def portable(value, work: Path):
    """``value`` (JSON-able) without this machine's absolute paths: the work folder becomes
    ``WORKDIR``, paths under the current folder become relative, other absolute paths keep their
    file name only (``<dir>/name``)."""
    if isinstance(value, dict):
        return {k: portable(v, work) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [portable(v, work) for v in value]
    if not isinstance(value, str):
        return value
    s = value.replace(str(work.resolve()), "WORKDIR").replace(str(work), "WORKDIR")
    if s.startswith("/"):
        p = Path(s)
        try:
            return str(p.relative_to(Path.cwd()))
        except ValueError:
            return f"<dir>/{p.name}"
    return s


def compare_figure1(ref_path: Path, new_path: Path) -> dict:
    """Per panel: the largest |new - reference| value difference, the largest stated error bound
    of the new values, and how many values lie outside their bound."""
    import numpy as np

    ref, new = np.load(ref_path), np.load(new_path)
    panels: dict[str, dict] = {}
    for key in new.files:
        if key.endswith("|error") or key not in ref.files:
            continue
        a, b = np.asarray(new[key], np.float64), np.asarray(ref[key], np.float64)
        if a.shape != b.shape:
            continue
        err = np.asarray(new[key + "|error"], np.float64) if key + "|error" in new.files else np.zeros_like(a)
        gap = np.abs(a - b)
        near1 = np.abs(b - 1) < 0.05
        label = key.rsplit("|image", 1)[0]
        p = panels.setdefault(
            label,
            {
                "images": 0,
                "values": 0,
                "outside_bound": 0,
                "max_gap": 0.0,
                "max_bound": 0.0,
                "max_gap_near_1": 0.0,
                "max_bound_near_1": 0.0,
            },
        )
        p["images"] += 1
        p["values"] += int(a.size)
        p["outside_bound"] += int((gap > err).sum())
        p["max_gap"] = max(p["max_gap"], float(gap.max()))
        p["max_bound"] = max(p["max_bound"], float(err.max()))
        if near1.any():
            p["max_gap_near_1"] = max(p["max_gap_near_1"], float(gap[near1].max()))
            p["max_bound_near_1"] = max(p["max_bound_near_1"], float(err[near1].max()))
    return {"reference": str(ref_path), "panels": panels}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1 :]
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--label", required=True, help="e.g. before / after")
    ap.add_argument("--out", required=True, help="JSON file to write")
    ap.add_argument("--workdir", default=None, help="cache + reports folder (default: temp dir)")
    ap.add_argument("--no-rerun", action="store_true", help="skip the cached rerun")
    ap.add_argument(
        "--reference-figure1",
        default=None,
        help="figure1_spectra.npz of an earlier (float64) report: compare the values with its",
    )
    args = ap.parse_args(argv)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="linstab-profile-"))
    cache = work / "cache"
    if cache.exists() and any(cache.iterdir()):
        raise SystemExit(f"{cache} is not empty: a cold run needs an empty cache folder")
    env = {**os.environ, "LINSTAB_CACHE_DIR": str(cache)}
    script = Path(sys.executable).parent / "linstab"
    # the installed command, or the package on PYTHONPATH (a checkout without an install)
    exe = (
        [str(script)]
        if script.is_file()
        else [sys.executable, "-c", "import sys; from linstab.cli import main; sys.exit(main())"]
    )
    result: dict = {
        "label": args.label,
        "command": ["python", "benchmarks/report_profile.py", *argv, "--", *extra],
        "report_args": extra,
        "environment": environment(),
        "loadavg_before": os.getloadavg(),
    }
    for run in ("cold", "cached"):
        if run == "cached" and args.no_rerun:
            break
        prof = work / f"profile-{run}.json"
        cmd = [*exe, "report", *extra, "--out", str(work / "report"), "--profile", str(prof), "--no-progress"]
        print(f"[{time.strftime('%H:%M:%S')}] {run}: {' '.join(cmd)}", flush=True)
        wall, rc, cpu = _run(cmd, env)
        if rc != 0:
            raise SystemExit(f"linstab report failed ({run}, exit {rc})")
        p = json.loads(prof.read_text())
        p.pop("records", None)
        envj = json.loads((work / "report" / "environment.json").read_text())
        result[run] = {
            "wall_s": round(wall, 2),
            # CPU seconds of the report and its processes; busy = cpu / (wall x usable CPUs): what
            # is left is idle time (waits, a lone process at the end of a section)
            "cpu_s": round(cpu, 1),
            "cpu_busy": round(cpu / (wall * len(os.sched_getaffinity(0))), 3),
            "cache": envj.get("cache"),
            "timings": envj.get("timings"),
        }
        result[run].update(p)
        print(f"[{time.strftime('%H:%M:%S')}] {run}: {wall:.1f} s, CPU {cpu:.0f} s", flush=True)
    result["loadavg_after"] = os.getloadavg()
    if args.reference_figure1:
        new = sorted((work / "report" / "data").rglob("figure1_spectra.npz"))
        result["figure1_vs_reference"] = compare_figure1(Path(args.reference_figure1), new[0])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(portable(result, work), indent=1, default=str))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
