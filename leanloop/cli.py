"""The ``leanloop`` console command: one entry point for devices, operators and hub admins.

Device and operator commands import only ``runtime``; hub-side commands (``hub``, ``keys``,
``bundle publish``, ``train``, ``demo``) import ``hub``/``trainer`` lazily, so a device without
the hub extra still gets a clear message instead of an ImportError. Every command ends bad
input with a one-line ``error: ...`` and exit code 2, a failed operation with exit code 1.
"""

from __future__ import annotations

import contextlib
import faulthandler
import json
import logging
from pathlib import Path
from typing import Annotated

import typer

from leanloop._cli_common import (
    HUB_URL,
    AdminToken,
    DeviceConfig,
    HubUrl,
    StateDir,
    _fail,
    _state_dir,
    admin_client,
    handled,
)
from leanloop.cli_device_key import rotate_key
from leanloop.cli_identity import identity_app
from leanloop.cli_ops import device_metrics, status_rows, watch_download
from leanloop.cli_train import train as train_command
from runtime.console import JsonFlag, say
from runtime.errors import ConfigError, first_line

__all__ = ["app", "main"]

app = typer.Typer(
    help="leanloop: the Lean AI loop for vision at the edge.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
bundle_app = typer.Typer(
    help="Build, verify and publish signed model bundles.", no_args_is_help=True
)
device_app = typer.Typer(help="The device service.", no_args_is_help=True)
samples_app = typer.Typer(help="The device's sample store.", no_args_is_help=True)
delta_app = typer.Typer(help="The delta codec on any two files.", no_args_is_help=True)
feedback_app = typer.Typer(help="Corrective feedback on stored predictions.", no_args_is_help=True)
app.add_typer(bundle_app, name="bundle")
app.add_typer(device_app, name="device")
app.add_typer(samples_app, name="samples")
app.add_typer(delta_app, name="delta")
app.add_typer(feedback_app, name="feedback")
shadow_app = typer.Typer(help="Shadow-mode A/B: a candidate bundle measured on live frames.")
app.add_typer(shadow_app, name="shadow")
app.add_typer(identity_app, name="identity")


def _print_version(value: bool) -> None:
    if value:
        from runtime._version import __version__

        typer.echo(f"leanloop {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="print the version and exit"
        ),
    ] = False,
) -> None:
    """leanloop: the Lean AI loop for vision at the edge."""


def _setup_logging(verbose: bool) -> None:
    from runtime.logs import setup_logging

    setup_logging(verbose)  # journald priorities and no second timestamp under systemd


# ---- device side -----------------------------------------------------------------------


@device_app.command("run")
@handled
def device_run(
    config: DeviceConfig = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run the device service (what the systemd unit starts)."""
    from runtime.config import load_config
    from runtime.service import DeviceService

    _setup_logging(verbose)
    cfg = load_config(config)
    # A hang killed by systemd's watchdog (SIGABRT) leaves every thread's traceback in the log
    # (stderr must be a real file descriptor: not under a test runner's capture).
    with contextlib.suppress(OSError, ValueError, AttributeError):
        faulthandler.enable()
    raise typer.Exit(DeviceService(cfg).run())


device_app.command("metrics")(handled(device_metrics))
device_app.command("rotate-key")(handled(rotate_key))


@app.command("infer")
@handled
def infer(
    images: Annotated[list[Path], typer.Argument(help="image files")],
    bundle: Annotated[Path, typer.Option(help="bundle folder")],
    backend: Annotated[
        str, typer.Option(help="engines in order of preference, e.g. litert,onnxruntime")
    ] = "onnxruntime,litert,openvino",
    threads: Annotated[int, typer.Option(help="engine threads; 0: default")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="engines' INFO lines")] = False,
) -> None:
    """Run a bundle's pipeline on image files and print the predictions.

    Exit code: 0 every image ran, 2 some image was missing or not decodable (each reported on
    stderr, the others still run), 1 the pipeline failed on an image.
    """
    from leanloop._infer import native_stderr_filtered, run_infer

    # Each bad image is reported once, by run_infer; the pipeline's own warnings only with -v.
    logging.getLogger("leanloop").setLevel(logging.DEBUG if verbose else logging.ERROR)
    with contextlib.nullcontext() if verbose else native_stderr_filtered():
        code = run_infer(images, bundle, backend, threads, as_json)
    if code:
        raise typer.Exit(code)


def _store_bytes(config: Path | None) -> int:
    """The service's ``store.max_bytes`` (the operator must open LMDB with the same map size)."""
    from runtime.config import load_config

    return load_config(config).store.max_bytes


@app.command("status")
@handled
def status(
    config: DeviceConfig = None,
    state_dir: StateDir = None,
    as_json: JsonFlag = False,
    watch: Annotated[
        bool,
        typer.Option("--watch", help="follow a bundle download to its end (a bar on a terminal)"),
    ] = False,
    timeout: Annotated[float, typer.Option(help="--watch: give up after this many s")] = 3600.0,
) -> None:
    """Operator view of the device: versions, update state, health, fps, latency, store."""
    from runtime.operator import status as device_status

    if watch:
        st = watch_download(_state_dir(config, state_dir), as_json, timeout)
    else:
        st = device_status(_state_dir(config, state_dir))
    if as_json:
        typer.echo(json.dumps(st, indent=2, sort_keys=True))
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(show_header=False, box=None)
    act, prev = st.get("active") or {}, st.get("previous") or {}
    t.add_row("service", "running" if st.get("running") else "not running")
    t.add_row(
        "active",
        f"{act.get('bundle')} v{act.get('version')} ({act.get('status')})" if act else "none",
    )
    t.add_row("previous", f"{prev.get('bundle')} v{prev.get('version')}" if prev else "none")
    inst = st.get("install") or {}
    t.add_row(
        "update",
        str(st.get("update_state"))
        + (f" ({inst.get('bundle')} v{inst.get('version')})" if inst.get("bundle") else ""),
    )
    if st.get("last_update_error"):
        t.add_row("last error", str(st["last_update_error"]))
    c = st.get("counters", {})
    t.add_row(
        "frames",
        f"{c.get('frames', 0)} ({c.get('frame_errors', 0)} errors), {st.get('fps', 0)} fps",
    )
    lat = st.get("latency_ms") or {}
    t.add_row("latency", f"p50 {lat.get('p50')} ms, p99 {lat.get('p99')} ms")
    s = st.get("store") or {}
    t.add_row(
        "store",
        f"{s.get('count', 0)} samples, {s.get('bytes', 0)} / "
        f"{s.get('max_bytes', 0)} bytes, {s.get('pending', 0)} to upload",
    )
    from runtime.operator import status_notes

    for key, text in status_notes(st):
        t.add_row(key, text)
    for k, v in status_rows(st):
        t.add_row(k, v)
    if fb := st.get("feedback"):  # per class: leanloop status --json
        t.add_row("feedback", f"{fb.get('reviewed')} reviewed, {fb.get('corrections')} corrected, "
                  f"accuracy on reviewed {fb.get('accuracy')}")  # fmt: skip
    Console().print(t)


@app.command("rollback")
@handled
def rollback(
    config: DeviceConfig = None,
    state_dir: StateDir = None,
    yes: Annotated[bool, typer.Option("--yes", help="do not ask")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Return to the previous committed bundle (live between two frames, or service stopped)."""
    from runtime.operator import rollback as device_rollback

    sd = _state_dir(config, state_dir)
    if as_json and not yes:
        raise ConfigError("--json asks nothing: add --yes")
    if not yes and not typer.confirm("Roll back to the previous committed bundle?"):
        raise typer.Exit(1)
    msg = device_rollback(sd)
    say(as_json, {"message": msg}, msg)


@samples_app.command("list")
@handled
def samples_list(
    config: DeviceConfig = None,
    state_dir: StateDir = None,
    top: Annotated[int, typer.Option(help="how many")] = 20,
    as_json: JsonFlag = False,
) -> None:
    """What the sample store holds, most valuable first."""
    from runtime.operator import list_samples

    rows = list_samples(_state_dir(config, state_dir), top, _store_bytes(config))
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    t = Table("id", "priority", "frame", "bundle", "prediction", "state")
    # Full ids, never cut: they are pasted into `feedback` (which also takes a unique prefix).
    t.columns[0].no_wrap = True
    t.columns[0].min_width = max((len(r["id"]) for r in rows), default=2)
    for r in rows:
        t.add_row(
            r["id"],
            f"{r['priority']:.3f}",
            r["frame_id"],
            f"{r['bundle']} v{r['bundle_version']}",
            r["summary"],
            r["upload_state"],
        )
    Console().print(t)


def _feedback(
    config: Path | None,
    state_dir: Path | None,
    sample_id: str,
    label: str | None,
    who: str | None,
    item: int | None,
    as_json: bool,
) -> None:
    import getpass

    from runtime.operator import feedback

    out = feedback(
        _state_dir(config, state_dir),
        _store_bytes(config),
        sample_id,
        label,
        who or getpass.getuser(),
        item,
    )
    if as_json:
        typer.echo(json.dumps(out))
    else:
        what = f"corrected to {label}" if label else "confirmed"
        if out.get("queued"):
            typer.echo(f"{sample_id}: {what}; already uploaded: the feedback goes to the hub next")
        else:
            typer.echo(f"{sample_id}: {what}; priority now {out['priority']:.3f}")


# The options both feedback commands take (typer wants one function per command).
SampleId = Annotated[str, typer.Argument(help="sample id (leanloop samples list)")]
Who = Annotated[str | None, typer.Option(help="operator name (default: login)")]
Item = Annotated[int | None, typer.Option(help="which detection (default: whole frame)")]


@feedback_app.command("confirm")
@handled
def feedback_confirm(
    sample_id: SampleId,
    config: DeviceConfig = None,
    state_dir: StateDir = None,
    who: Who = None,
    item: Item = None,
    as_json: JsonFlag = False,
) -> None:
    """The stored prediction is right."""
    _feedback(config, state_dir, sample_id, None, who, item, as_json)


@feedback_app.command("correct")
@handled
def feedback_correct(
    sample_id: SampleId,
    label: Annotated[str, typer.Option(help="the right label (a class of the ontology)")],
    config: DeviceConfig = None,
    state_dir: StateDir = None,
    who: Who = None,
    item: Item = None,
    as_json: JsonFlag = False,
) -> None:
    """The stored prediction is wrong; record the right label (top upload priority)."""
    _feedback(config, state_dir, sample_id, label, who, item, as_json)


@shadow_app.command("report")
@handled
def shadow_report(
    config: DeviceConfig = None,
    state_dir: StateDir = None,
    as_json: JsonFlag = False,
) -> None:
    """The shadow candidate: status, agreement, flips, latency, shed frames (shadow.json)."""
    from runtime.shadow.report import REPORT_NAME, load_report

    sd = _state_dir(config, state_dir)
    if not sd.is_dir():
        raise ConfigError(f"{sd}: no such state folder")
    rep = load_report(sd)
    if as_json:
        typer.echo(json.dumps(rep.summary() | {"history": [h.model_dump() for h in rep.history]}))
        return
    if not (sd / REPORT_NAME).exists():
        typer.echo("no shadow candidate has run on this device")
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(show_header=False, box=None)
    c, p = rep.candidate, rep.production
    t.add_row("candidate", f"{c.bundle} v{c.version} (slot {c.slot})" if c else "none")
    t.add_row("production", f"{p.bundle} v{p.version}" if p else "none")
    enabled = rep.status in ("staging", "starting", "running", "promoting")
    t.add_row("status", f"{rep.status} (candidate {'enabled' if enabled else 'off'})")
    if rep.reason:
        t.add_row("reason", rep.reason)
    if rep.verdict:
        t.add_row("rule", rep.verdict)
    st = rep.stats
    agreement = f"{st.agreement:.2%}" if st.agreement is not None else "-"
    t.add_row("agreement", f"{agreement} of {st.compared} frames ({st.agreed} agree)")
    t.add_row(
        "boxes",
        f"{st.matched} matched, {st.label_agree} same label, {st.missed} missed, {st.extra} extra",
    )
    t.add_row(
        "flip matrix",
        "; ".join(
            f"{a}: " + ", ".join(f"{b} {n}" for b, n in sorted(row.items()))
            for a, row in sorted(st.flip_matrix.items())
        )
        or "-",
    )
    flips = st.flips_only()
    t.add_row(
        "flips",
        ", ".join(f"{a} -> {b}: {n}" for a, row in sorted(flips.items()) for b, n in row.items())
        or "none",
    )
    for who in ("production", "candidate"):
        hist = st.latency_ms.get(who, {}).get("total")
        if hist is not None and hist.n:
            t.add_row(
                f"latency {who}",
                f"mean {hist.mean:.1f} ms, p50 <= {hist.quantile(0.5)} ms, "
                f"p99 <= {hist.quantile(0.99)} ms",
            )
    k = rep.counters
    offered = k.get("offered", 0)
    t.add_row(
        "frames",
        f"{offered} offered, {k.get('shed', 0)} shed "
        f"({k.get('shed', 0) / offered if offered else 0:.1%}), {k.get('answered', 0)} answered, "
        f"{k.get('errors', 0)} errors, {k.get('disagreements_stored', 0)} disagreements stored",
    )
    Console().print(t)


_admin_client = admin_client


@shadow_app.command("assign")
@handled
def shadow_assign(
    bundle: Annotated[str, typer.Argument(help="bundle name")],
    version: Annotated[int, typer.Argument(help="published bundle version (the candidate)")],
    hub: HubUrl = HUB_URL,
    token: AdminToken = None,
    cohort: Annotated[str | None, typer.Option(help="only this cohort")] = None,
    device: Annotated[list[str] | None, typer.Option(help="only these devices")] = None,
    min_frames: Annotated[int, typer.Option(help="frames both models must answer")] = 500,
    min_agreement: Annotated[float, typer.Option(help="lowest agreement that promotes")] = 0.98,
    max_accuracy_drop: Annotated[
        float, typer.Option(help="δ on corrected frames (candidate vs production accuracy)")
    ] = 0.02,
    measure_only: Annotated[bool, typer.Option(help="report, never promote")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Hub admin: run a candidate in shadow mode on devices, a cohort, or the fleet."""
    rule = {
        "min_frames": min_frames,
        "min_agreement": min_agreement,
        "max_accuracy_drop": max_accuracy_drop,
        "promote": not measure_only,
    }
    n = _admin_client(hub, token).shadow_rollout(bundle, version, rule, device or None, cohort)
    say(
        as_json,
        {"bundle": bundle, "version": version, "devices": n},
        f"{bundle} v{version} in shadow on {n} device(s)",
    )


@shadow_app.command("fleet")
@handled
def shadow_fleet(
    hub: HubUrl = HUB_URL,
    token: AdminToken = None,
    cohort: Annotated[str | None, typer.Option(help="only this cohort")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Hub admin: shadow telemetry per cohort (and per device with --json)."""
    view = _admin_client(hub, token).shadow(cohort)
    if as_json:
        typer.echo(json.dumps(view, indent=2, sort_keys=True))
        return
    for g in view["cohorts"]:
        c = g["candidate"] or {}
        agreement = f"{g['agreement']:.2%}" if g["agreement"] is not None else "-"
        typer.echo(
            f"cohort {g['cohort'] or '-'}: {c.get('bundle')} v{c.get('version')} on "
            f"{len(g['devices'])} device(s) {g['status']}: agreement {agreement} over "
            f"{g['stats']['compared']} frames, shed {g['shed_fraction']:.1%}"
        )


# ---- deltas ----------------------------------------------------------------------------


def _delta_error(e: Exception) -> None:
    _fail(first_line(e), 1)


@delta_app.command("make")
@handled
def delta_make(
    old: Annotated[Path, typer.Argument(help="base file the device has")],
    new: Annotated[Path, typer.Argument(help="file the device should end up with")],
    patch: Annotated[Path, typer.Argument(help="patch file to write")],
    codec: Annotated[
        str, typer.Option(help="auto | tensor | hdiffpatch | hdiffpatch-lzma | zstd-dict | bsdiff4")
    ] = "auto",
    as_json: JsonFlag = False,
) -> None:
    """Make a verified patch from OLD to NEW (tensor-aware for model files)."""
    from bsdiff import DeltaError, codec_name, make_patch, read_header

    try:
        data = make_patch(old.read_bytes(), new.read_bytes(), codec=codec)
    except DeltaError as e:
        _delta_error(e)
        return
    from runtime._atomic import atomic_write_bytes

    atomic_write_bytes(patch, data)
    h = read_header(data)
    say(
        as_json,
        {
            "patch": str(patch),
            "bytes": len(data),
            "result_bytes": h.result_size,
            "codec": codec_name(h.codec),
        },
        f"{patch}: {len(data)} bytes ({len(data) / max(1, h.result_size):.2%} of "
        f"{h.result_size}), codec {codec_name(h.codec)}",
    )


@delta_app.command("apply")
@handled
def delta_apply(
    old: Annotated[Path, typer.Argument(help="base file")],
    patch: Annotated[Path, typer.Argument(help="patch file")],
    out: Annotated[Path, typer.Argument(help="result file to write (atomically)")],
    as_json: JsonFlag = False,
) -> None:
    """Apply PATCH to OLD; the result is written only if its sha256 matches the patch header."""
    from bsdiff import DeltaError, apply_patch_file

    try:
        h = apply_patch_file(old, patch, out)
    except DeltaError as e:
        _delta_error(e)
        return
    say(
        as_json,
        {"out": str(out), "bytes": h.result_size, "sha256": h.result_sha256.hex()},
        f"{out}: {h.result_size} bytes, sha256 {h.result_sha256.hex()[:16]}… verified",
    )


# ---- bundles ---------------------------------------------------------------------------


@bundle_app.command("build")
@handled
def bundle_build(
    src: Annotated[Path, typer.Argument(help="bundle source folder")],
    out: Annotated[Path, typer.Option(help="output bundle folder (new or empty)")],
    name: Annotated[str, typer.Option(help="bundle name, e.g. digits")],
    version: Annotated[int, typer.Option(help="bundle version (monotonic)")] = 1,
    backend: Annotated[
        str | None,
        typer.Option(
            help="engines to compute the golden outputs with, in order of preference "
            "(default: each model on the engine made for its file)"
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Make a bundle (manifest, golden expected outputs) from a source folder."""
    from runtime.bundle.build import build_bundle

    m = build_bundle(src, out, name=name, version=version, backend=backend)
    say(
        as_json,
        {"name": m.name, "version": m.version, "files": len(m.files), "out": str(out)},
        f"built {m.name} v{m.version}: {len(m.files)} files in {out}",
    )


@bundle_app.command("verify")
@handled
def bundle_verify(
    bundle: Annotated[Path, typer.Argument(help="bundle folder")],
    root: Annotated[Path, typer.Option(help="trusted root.json")],
    targets: Annotated[
        Path | None,
        typer.Option(help="signed targets.json (default: <bundle>/../targets.json or the hub's)"),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Offline check of a bundle's files against its manifest and signed targets metadata."""
    from runtime.bundle.verify import verify_offline

    m = verify_offline(bundle, root, targets)
    say(
        as_json,
        {"ok": True, "name": m.name, "version": m.version, "files": len(m.files) + 1},
        f"ok: {m.name} v{m.version}, {len(m.files) + 1} files verified",
    )


@bundle_app.command("publish")
@handled
def bundle_publish(
    bundle: Annotated[Path, typer.Argument(help="bundle folder")],
    hub: HubUrl,
    keys: Annotated[Path, typer.Option(help="keys folder from `leanloop keys init`")],
    token: AdminToken = None,
    cohort: Annotated[str | None, typer.Option(help="roll out to this cohort")] = None,
    force: Annotated[bool, typer.Option("--force", help="publish even if not blessed")] = False,
    reason: Annotated[str | None, typer.Option(help="why (--force; audited)")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Sign a bundle's files as TUF targets and upload them to the hub."""
    from hub.cli import publish_command

    if not token:
        raise ConfigError("no admin token: pass --token or set LEANLOOP_ADMIN_TOKEN")
    if force and not (reason or "").strip():
        raise ConfigError("--force needs --reason (it is written to the hub's audit log)")
    publish_command(bundle, hub, keys, token, cohort, reason if force else None, as_json)


def _mount_hub() -> None:
    """Mount the hub-side sub-commands when the hub package imports (it needs aiohttp)."""
    try:
        from hub.cli import hub_app, keys_app
    except ImportError:
        return
    app.add_typer(hub_app, name="hub")
    app.add_typer(keys_app, name="keys")
    from leanloop.cli_fleet import fleet_app, rollout_app

    app.add_typer(fleet_app, name="fleet")
    app.add_typer(rollout_app, name="rollout")


@app.command("demo")
@handled
def demo(
    workdir: Annotated[Path, typer.Option(help="where the run keeps its files")] = Path(
        "demo-work"
    ),
    iterations: Annotated[int, typer.Option(min=1, help="Build-Measure-Learn iterations")] = 3,
    devices: Annotated[int, typer.Option(min=1, help="device processes per arm")] = 2,
    frames: Annotated[
        int, typer.Option(min=10, help="production frames per device per iteration")
    ] = 150,
    budget: Annotated[int, typer.Option(min=1, help="digit labels per iteration per arm")] = 100,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="print the report as JSON on stdout (tables go to stderr); also "
            "writes report.json",
        ),
    ] = False,
    full: Annotated[
        bool,
        typer.Option(
            "--full", help="the larger run: every export format, training jobs one at a time"
        ),
    ] = False,
) -> None:
    """The whole loop on one machine: hub, devices, train, publish, update, collect, retrain."""
    import sys

    from leanloop.demo import DemoSettings, run_demo

    settings = DemoSettings(
        workdir=workdir,
        iterations=iterations,
        devices=devices,
        frames=frames,
        budget=budget,
        seed=seed,
        json_report=as_json,
        full=full,
    )
    with contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext():
        _rows, report = run_demo(settings)
    if as_json:
        typer.echo(json.dumps(report, indent=2, default=str))


_mount_hub()
app.command("train")(train_command)

from leanloop.cli_dataset import dataset_app, ontology_app  # noqa: E402
from leanloop.cli_model import model_app  # noqa: E402

app.add_typer(model_app, name="model")

app.add_typer(dataset_app, name="dataset")
app.add_typer(ontology_app, name="ontology")

from leanloop.cli_replay import replay_app  # noqa: E402

app.registered_commands += replay_app.registered_commands  # replay, bless, metrics


from leanloop.cli_config import config_app, mark_good  # noqa: E402  (the app is made above)

app.add_typer(config_app, name="config")
app.command("mark-good")(mark_good)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
