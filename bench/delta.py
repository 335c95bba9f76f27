"""Delta benchmark: patch size, diff time, apply time and apply peak RSS, ours vs the anchors.

``python -m bench.delta [--out bench-out] [--models mobilenet,resnet18] [--timeout 60]``

Two networks are built here in torch with seeded random weights (no downloads): a
MobileNetV2-like net (~3.5 M parameters, ~14 MB ONNX) and a ResNet-18-like net (~11.7 M,
~47 MB). From each base, four successors are exported to ONNX the way the trainer does
(opset 17, TorchScript exporter, BatchNorm folded):

* ``finetune`` — every parameter and BN statistic multiplied by ``1 + 1e-3·N(0, 1)``;
* ``head`` — the classifier re-initialised (a head-only retrain);
* ``addclass`` — the classifier gets a 1001st output, the old rows kept;
* ``reexport`` — the same weights exported inside a wrapper, so names change.

For each pair every tool makes a patch in a subprocess (with a timeout) and applies it in
another, whose peak RSS is read from the kernel's rusage for that child (``os.wait4``, the
per-child form of ``RUSAGE_CHILDREN``, in a small launcher the tool is forked from, since a
child inherits its parent's high-water mark). Python tools' figures include the worker
interpreter; ``python_worker_baseline_rss_mb`` in the JSON is that floor.

Tools: ours (``bsdiff.make_patch``, codec ``auto``), hdiffpatch (PyPI, LZMA — its smallest
setting here), bsdiff4, ``zstd -19 --patch-from``, ``xdelta3 -9``, and ``zstd -19 -T0`` of the
whole new file. To stay near five minutes on two cores, two tools run once by default:
bsdiff4 (30-60 s per MobileNet pair, minutes on ResNet) only on the first model's fine-tune,
the pair its diff time is a goal against, and ``zstd -19`` (no base: the same ~92 % whatever
the pair) only on each fine-tune; elsewhere they are marked ``skipped``. ``--all`` runs them
on every pair, bsdiff4 under twice the timeout. The table is printed and written to
``<out>/delta.json``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["PAIRS", "TOOLS", "build_models", "main"]

PAIRS = ("finetune", "head", "addclass", "reexport")
TOOLS = ("ours", "hdiffpatch", "bsdiff4", "zstd-patch-from", "xdelta3", "zstd-19")
_MODEL_CACHE_VERSION = "1"


# --- models ------------------------------------------------------------------------------


def build_models(folder: Path, names: list[str]) -> dict[str, dict[str, Path]]:
    """Export (or reuse) the base and the four successors of each model; paths by name/pair."""
    out: dict[str, dict[str, Path]] = {}
    for name in names:
        paths = {p: folder / f"{name}-{p}.onnx" for p in ("base", *PAIRS)}
        stamp = folder / f"{name}.v{_MODEL_CACHE_VERSION}.done"
        if not stamp.exists():
            folder.mkdir(parents=True, exist_ok=True)
            for pair, data in _export_family(name).items():
                paths[pair].write_bytes(data)
            stamp.touch()
        out[name] = paths
    return out


def _export_family(name: str) -> dict[str, bytes]:
    import torch
    from torch import nn

    torch.manual_seed(0)
    torch.set_num_threads(2)
    make: Callable[[int], nn.Module] = _mobilenet if name == "mobilenet" else _resnet18
    base = make(1000)
    with torch.no_grad():
        for m in base.modules():  # trained-looking BN statistics, so folding is not trivial
            if isinstance(m, nn.BatchNorm2d):
                assert m.running_mean is not None and m.running_var is not None
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
    family = {"base": _export(base)}

    g = torch.Generator().manual_seed(1)
    tuned = make(1000)
    tuned.load_state_dict(base.state_dict())
    with torch.no_grad():
        for t in [*tuned.parameters(), *(b for b in tuned.buffers() if b.is_floating_point())]:
            t.mul_(1 + 1e-3 * torch.randn(t.shape, generator=g))
    family["finetune"] = _export(tuned)

    head = make(1000)
    head.load_state_dict(base.state_dict())
    with torch.no_grad():
        fc = head.get_submodule("classifier")
        assert isinstance(fc, nn.Linear)
        fc.weight.normal_(0, 0.01, generator=g)
        fc.bias.normal_(0, 0.01, generator=g)
    family["head"] = _export(head)

    more = make(1001)
    state = more.state_dict()
    for k, v in base.state_dict().items():
        if state[k].shape == v.shape:
            state[k] = v
        else:
            state[k][: v.shape[0]] = v
    more.load_state_dict(state)
    family["addclass"] = _export(more)

    wrapper = nn.Sequential()
    wrapper.add_module("net", base)
    family["reexport"] = _export(wrapper)
    return family


def _export(model: Any) -> bytes:
    import torch

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(),
            (torch.zeros(1, 3, 224, 224),),
            buf,  # type: ignore[arg-type]  # a BytesIO works; the stub says path
            opset_version=17,
            do_constant_folding=True,
            dynamo=False,
            input_names=["x"],
            output_names=["y"],
        )
    return buf.getvalue()


def _mobilenet(classes: int) -> Any:
    """MobileNetV2's layout (t, c, n, s table; 1280-wide head): ~3.5 M parameters."""
    from torch import nn

    def cbr(cin: int, cout: int, k: int, s: int = 1, groups: int = 1, act: bool = True) -> Any:
        layers: list[nn.Module] = [
            nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
        ]
        return nn.Sequential(*layers, nn.ReLU6()) if act else nn.Sequential(*layers)

    class Block(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int, t: int) -> None:
            super().__init__()
            hidden = cin * t
            layers = [cbr(cin, hidden, 1)] if t != 1 else []
            layers += [cbr(hidden, hidden, 3, stride, hidden), cbr(hidden, cout, 1, act=False)]
            self.body = nn.Sequential(*layers)
            self.residual = stride == 1 and cin == cout

        def forward(self, x: Any) -> Any:
            y = self.body(x)
            return x + y if self.residual else y

    table = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
             (6, 160, 3, 2), (6, 320, 1, 1)]  # fmt: skip
    layers: list[nn.Module] = [cbr(3, 32, 3, 2)]
    cin = 32
    for t, c, n, s in table:
        for i in range(n):
            layers.append(Block(cin, c, s if i == 0 else 1, t))
            cin = c
    layers += [cbr(cin, 1280, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return _classifier(nn.Sequential(*layers), nn.Linear(1280, classes))


def _resnet18(classes: int) -> Any:
    """ResNet-18's layout (BasicBlock ×2 per stage, 64..512 channels): ~11.7 M parameters."""
    from torch import nn

    class Basic(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(),
                nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
                nn.BatchNorm2d(cout),
            )
            self.down: nn.Module = nn.Identity()
            if stride != 1 or cin != cout:
                self.down = nn.Sequential(
                    nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
                )

        def forward(self, x: Any) -> Any:
            return (self.body(x) + self.down(x)).relu()

    layers: list[nn.Module] = [
        nn.Conv2d(3, 64, 7, 2, 3, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(),
        nn.MaxPool2d(3, 2, 1),
    ]
    cin = 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [Basic(cin, cout, stride), Basic(cout, cout, 1)]
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return _classifier(nn.Sequential(*layers), nn.Linear(512, classes))


def _classifier(features: Any, classifier: Any) -> Any:
    from torch import nn

    class Classifier(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = features
            self.classifier = classifier

        def forward(self, x: Any) -> Any:
            return self.classifier(self.features(x))

    return Classifier()


# --- tools -------------------------------------------------------------------------------


def _cli(tool: str, op: str, old: Path, a: Path, b: Path) -> list[str] | None:
    """The command line of a CLI tool (None: the tool is a Python library, run in a worker)."""
    size = str(max(old.stat().st_size, a.stat().st_size) + (1 << 20))
    if tool == "xdelta3":
        flag = ["-e", "-9"] if op == "diff" else ["-d"]
        return ["xdelta3", *flag, "-f", "-B", size, "-s", str(old), str(a), str(b)]
    if tool == "zstd-patch-from":
        flag = ["-19"] if op == "diff" else ["-d"]
        return ["zstd", "-q", "-f", *flag, f"--patch-from={old}", str(a), "-o", str(b)]
    if tool == "zstd-19":
        flag = ["-19", "-T0"] if op == "diff" else ["-d"]
        return ["zstd", "-q", "-f", *flag, str(a), "-o", str(b)]
    return None


def _tool_available(tool: str) -> bool:
    if tool in ("xdelta3",):
        return shutil.which("xdelta3") is not None
    if tool in ("zstd-patch-from", "zstd-19"):
        return shutil.which("zstd") is not None
    module = {"ours": "bsdiff", "hdiffpatch": "hdiffpatch", "bsdiff4": "bsdiff4"}[tool]
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def _worker(argv: list[str]) -> int:
    """``--worker diff|apply|noop TOOL OLD A B``: run one library call, print its seconds."""
    op, tool, old_p, a_p, b_p = argv
    import bsdiff

    old = Path(old_p).read_bytes() if op != "noop" and tool != "ours" else b""
    t0 = time.perf_counter()
    if op == "noop":
        pass
    elif tool == "ours" and op == "diff":
        Path(b_p).write_bytes(bsdiff.make_patch(Path(old_p).read_bytes(), Path(a_p).read_bytes()))
    elif tool == "ours":
        bsdiff.apply_patch_file(old_p, a_p, b_p)  # the device path: mmap + streamed result
    elif tool == "hdiffpatch":
        import hdiffpatch

        if op == "diff":
            new = Path(a_p).read_bytes()
            patch = hdiffpatch.diff(
                old, new, hdiffpatch.COMPRESSION_LZMA, validate=False, big_cache_match=True
            )
            Path(b_p).write_bytes(patch)
        else:
            Path(b_p).write_bytes(hdiffpatch.apply(old, Path(a_p).read_bytes()))
    elif tool == "bsdiff4":
        import bsdiff4

        if op == "diff":
            Path(b_p).write_bytes(bsdiff4.diff(old, Path(a_p).read_bytes()))
        else:
            Path(b_p).write_bytes(bsdiff4.patch(old, Path(a_p).read_bytes()))
    else:
        raise SystemExit(f"unknown worker tool {tool}")
    print(json.dumps({"seconds": time.perf_counter() - t0}))
    return 0


_LAUNCHER = """
import json, os, sys, time
t0 = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(sys.argv[1], sys.argv[1:])
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
print(json.dumps({"code": os.waitstatus_to_exitcode(status), "rss": usage.ru_maxrss * 1024,
                  "wall": time.perf_counter() - t0}), flush=True)
"""
"""Runs one command and reports that child's own rusage. A child's peak RSS starts from its
parent's at fork (Linux keeps the pre-exec high-water mark), so the measured tool is forked
from this small interpreter, not from the benchmark process."""


def _run(cmd: list[str], timeout: float) -> tuple[str, float, int, str]:
    """Run ``cmd``; (status, wall seconds, peak RSS bytes of that child, its stdout)."""
    launcher = [sys.executable, "-S", "-c", _LAUNCHER, *cmd]
    proc = subprocess.Popen(
        launcher, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the launcher and the tool it forked
        proc.communicate()
        return f"timeout (>{timeout:.0f} s)", timeout, 0, ""
    lines = out.strip().splitlines()
    if proc.returncode != 0 or not lines:
        return f"failed: {err.strip()[-200:]}", 0.0, 0, ""
    info = json.loads(lines[-1])
    if info["code"] != 0:
        return f"failed: {err.strip()[-200:]}", info["wall"], info["rss"], ""
    return "ok", info["wall"], info["rss"], "\n".join(lines[:-1])


def _measure(tool: str, old: Path, new: Path, work: Path, timeout: float) -> dict[str, Any]:
    patch, result = work / f"{tool}.patch", work / f"{tool}.out"
    for f in (patch, result):
        f.unlink(missing_ok=True)
    py = [sys.executable, "-m", "bench.delta", "--worker"]
    diff_cmd = _cli(tool, "diff", old, new, patch) or [
        *py,
        "diff",
        tool,
        str(old),
        str(new),
        str(patch),
    ]
    status, wall, _, out = _run(diff_cmd, timeout)
    row: dict[str, Any] = {"status": status}
    if status != "ok":
        row["diff_s"] = round(wall, 2)
        return row
    row["diff_s"] = round(json.loads(out)["seconds"] if out.strip() else wall, 3)
    row["patch_bytes"] = patch.stat().st_size
    row["ratio"] = patch.stat().st_size / new.stat().st_size
    if tool == "ours":
        import bsdiff

        h = bsdiff.read_header(patch.read_bytes())
        row["header_bytes"] = h.header_size
        row["codec"] = bsdiff.codec_name(h.codec)
    apply_cmd = _cli(tool, "apply", old, patch, result) or [
        *py,
        "apply",
        tool,
        str(old),
        str(patch),
        str(result),
    ]
    status, wall, rss, out = _run(apply_cmd, timeout)
    if status != "ok":
        row["status"] = f"apply {status}"
        return row
    row["apply_s"] = round(json.loads(out)["seconds"] if out.strip() else wall, 3)
    row["apply_rss_mb"] = round(rss / 2**20, 1)
    if result.read_bytes() != new.read_bytes():
        row["status"] = "apply produced a wrong file"
    patch.unlink(missing_ok=True)
    result.unlink(missing_ok=True)
    return row


# --- report ------------------------------------------------------------------------------


def _cell(r: dict[str, Any]) -> str:
    if r.get("status") != "ok":
        return str(r.get("status", "?"))[:30]
    size = r["patch_bytes"]
    pct = f"{100 * r['ratio']:.2f}%" if r["ratio"] >= 1e-4 else f"{size} B"
    return f"{pct} {r['diff_s']:.2f}s/{r['apply_s']:.2f}s {r['apply_rss_mb']:.0f}MB"


def _goals(results: list[dict[str, Any]], baseline_mb: float) -> list[dict[str, Any]]:
    goals: list[dict[str, Any]] = []
    bs_ref: dict[str, float] = {}
    for row in results:
        bs = row["tools"].get("bsdiff4", {})
        if bs.get("status") == "ok":
            bs_ref[row["model"]] = bs["diff_s"]
    for row in results:
        ours = row["tools"].get("ours", {})
        if ours.get("status") != "ok":
            continue
        anchors = {
            t: r["patch_bytes"]
            for t, r in row["tools"].items()
            if t != "ours" and r.get("status") == "ok"
        }
        g: dict[str, Any] = {"model": row["model"], "pair": row["pair"]}
        if row["pair"] == "finetune":
            g["ratio"] = round(ours["ratio"], 4)
            g["ratio_goal_met"] = ours["ratio"] <= 0.60
            ref = bs_ref.get(row["model"]) or next(iter(bs_ref.values()), None)
            if ref:
                g["diff_time_vs_bsdiff4"] = round(ours["diff_s"] / ref, 4)
                g["diff_time_goal_met"] = ours["diff_s"] <= ref / 20
                g["bsdiff4_reference"] = "same model" if row["model"] in bs_ref else "MobileNet"
        elif anchors:
            best = min(anchors, key=lambda t: anchors[t])
            g["best_anchor"] = best
            g["best_anchor_bytes"] = anchors[best]
            g["ours_bytes"] = ours["patch_bytes"]
            g["ours_payload_bytes"] = ours["patch_bytes"] - ours.get("header_bytes", 0)
            g["ours_codec"] = ours.get("codec")
            g["size_goal_met"] = ours["patch_bytes"] <= anchors[best]
        # The Python worker's own footprint (interpreter + numpy + zstandard) is not the
        # codec's; the goal is judged on what applying adds to it.
        limit = 2 * row["new_size"] / 2**20
        g["apply_rss_mb"] = ours["apply_rss_mb"]
        g["apply_rss_over_baseline_mb"] = round(ours["apply_rss_mb"] - baseline_mb, 1)
        g["apply_rss_goal_mb"] = round(limit, 1)
        g["apply_rss_goal_met"] = ours["apply_rss_mb"] - baseline_mb <= limit
        goals.append(g)
    return goals


def main(argv: list[str] | None = None) -> int:
    """Run the delta benchmark; print the table and write ``<out>/delta.json``."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        return _worker(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m bench.delta", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("bench-out"), help="output folder")
    parser.add_argument("--models", default="mobilenet,resnet18", help="comma-separated")
    parser.add_argument("--pairs", default=",".join(PAIRS), help="comma-separated")
    parser.add_argument("--tools", default=",".join(TOOLS), help="comma-separated")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per diff/apply")
    parser.add_argument(
        "--all", action="store_true", help="run bsdiff4 and zstd -19 on every pair, not once"
    )
    args = parser.parse_args(argv)
    models = build_models(args.out / "delta-models", args.models.split(","))
    tools = [t for t in args.tools.split(",") if t]
    work = Path(tempfile.mkdtemp(prefix="delta-bench-", dir=args.out))
    started = time.perf_counter()
    results: list[dict[str, Any]] = []
    try:
        py = [sys.executable, "-m", "bench.delta", "--worker", "noop", "ours", "-", "-", "-"]
        _, _, baseline_rss, _ = _run(py, 60)
        pairs = args.pairs.split(",")
        first = (next(iter(models)), "finetune" if "finetune" in pairs else pairs[0])
        for model, paths in models.items():
            for pair in pairs:
                old, new = paths["base"], paths[pair]
                row: dict[str, Any] = {
                    "model": model,
                    "pair": pair,
                    "old_size": old.stat().st_size,
                    "new_size": new.stat().st_size,
                    "tools": {},
                }
                for tool in tools:
                    if not _tool_available(tool):
                        row["tools"][tool] = {"status": "not installed"}
                    elif not args.all and tool == "bsdiff4" and (model, pair) != first:
                        row["tools"][tool] = {"status": "skipped (slow; see --all)"}
                    elif not args.all and tool == "zstd-19" and pair != "finetune":
                        row["tools"][tool] = {"status": "skipped (see finetune)"}
                    else:
                        timeout = args.timeout * (2 if tool == "bsdiff4" else 1)
                        row["tools"][tool] = _measure(tool, old, new, work, timeout)
                    print(f"{model:9s} {pair:9s} {tool:16s} {_cell(row['tools'][tool])}",
                          flush=True)  # fmt: skip
                results.append(row)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = {
        "command": "python -m bench.delta " + " ".join(argv),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "python_worker_baseline_rss_mb": round(baseline_rss / 2**20, 1),
        "seconds": round(time.perf_counter() - started, 1),
        "pairs": results,
        "goals": _goals(results, round(baseline_rss / 2**20, 1)),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "delta.json").write_text(json.dumps(report, indent=2) + "\n")
    _print_table(report, tools)
    return 0


def _print_table(report: dict[str, Any], tools: list[str]) -> None:
    print()
    print("cell: patch size (% of new file, or bytes) diff s/apply s, apply peak RSS")
    print(f"python worker baseline RSS: {report['python_worker_baseline_rss_mb']} MB")
    for row in report["pairs"]:
        print(f"\n{row['model']} {row['pair']} (new file {row['new_size'] / 2**20:.1f} MB)")
        for tool in tools:
            print(f"  {tool:16s} {_cell(row['tools'].get(tool, {}))}")
    print("\ngoals:")
    for g in report["goals"]:
        print("  " + json.dumps(g))
    print(f"\n{report['seconds']} s; written: delta.json")


if __name__ == "__main__":
    raise SystemExit(main())
