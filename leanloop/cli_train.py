"""``leanloop train SPEC.yaml``: train from a training spec, here or on a hub's job queue.

Locally it runs :func:`trainer.run.run_spec` with a progress bar per network (epochs, loss,
validation metric) and one for the search's trials, then prints the validation metrics and the
engines' parity and writes the bundle source to ``--out`` (default ``<spec name>-source``).
With ``--hub URL --bundle NAME --version N`` the same spec is queued on the hub, trained on
that bundle's annotated samples by the same trainer, followed with a progress bar, and its
bundle source downloaded to ``--out``. ``--json`` prints the model card instead of tables.

Exit codes: 0 done, 2 bad spec or dataset, 1 training, export or hub failure.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from runtime.errors import LeanloopError

__all__ = ["train"]


def _fail(msg: str, code: int) -> None:
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(code)


def _summary(card: dict[str, Any], source: str) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for key, m in card["metrics"].items():
        table = Table(title=f"{key}: validation")
        for col in ("class", "precision", "recall", "F1", "support"):
            table.add_column(col, justify="right" if col != "class" else "left")
        for name, v in m["per_class"].items():
            table.add_row(
                name,
                f"{v['precision']:.3f}",
                f"{v['recall']:.3f}",
                f"{v['f1']:.3f}",
                f"{v['support']:.0f}",
            )
        console.print(table)
        overall = ", ".join(
            f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in m["overall"].items()
        )
        console.print(f"  {overall}")
    parity = card["parity"]["max_abs_diff"]
    console.print("parity vs torch: " + ", ".join(f"{k} {v:.1e}" for k, v in parity.items()))
    for fmt, why in card["parity"]["skipped"].items():
        console.print(f"[yellow]{fmt} skipped:[/] {why}")
    if card.get("search"):
        s = card["search"]
        console.print(
            f"search: {s['trials_run']} trials, {s['pruned']} pruned, best {s['best_value']:.3f} "
            f"with {json.dumps(s['best_params'], sort_keys=True)}"
        )
    console.print(f"wrote {source} (model card: {source}/MODEL_CARD.md)")


def _local(spec: Any, out: Path, as_json: bool) -> None:
    from trainer.spec import load_spec_dataset

    dataset_at = load_spec_dataset(spec)  # a bad dataset fails before torch is even imported
    dataset_at[0].check()
    from rich.progress import TextColumn

    from runtime.console import step_progress
    from trainer.engine import EpochReport
    from trainer.run import run_spec

    # Bars on stderr, only at a terminal and without --json (runtime/console.py).
    with step_progress(as_json, TextColumn("{task.fields[info]}")) as progress:
        bars: dict[str, Any] = {}

        def on_epoch(key: str, r: EpochReport) -> None:
            if key not in bars:
                bars[key] = progress.add_task(f"train {key}", total=r.epochs, info="")
            progress.update(
                bars[key],
                completed=r.epoch,
                info=f"loss {r.train_loss:.3f}  val {r.metric:.3f}",
            )

        def on_trial(row: dict[str, Any]) -> None:
            if "search" not in bars:
                bars["search"] = progress.add_task(
                    "search", total=spec.search.trials if spec.search else 1, info=""
                )
            value = "pruned" if row["state"] == "PRUNED" else f"{row['value'] or 0:.3f}"
            progress.update(bars["search"], advance=1, info=f"trial {row['number']}: {value}")

        result = run_spec(spec, out, on_epoch, on_trial, dataset_at)
    if as_json:
        typer.echo(json.dumps({"source": result["source"], "card": result["card"]}, indent=1))
    else:
        _summary(result["card"], result["source"])


def _on_hub(
    spec: Any, hub: str, token: str | None, bundle: str, version: int, out: Path, as_json: bool
) -> None:
    from hub.client import HubAdminClient
    from runtime.console import step_progress

    if not token:
        _fail("no admin token: pass --token or set LEANLOOP_ADMIN_TOKEN", 2)
    client = HubAdminClient(hub, str(token))
    body = spec.model_dump(mode="json", exclude={"dataset"})
    job = client.start_train(bundle, version, spec=body)
    status: dict[str, Any] = {}
    with step_progress(as_json) as progress:
        bar = progress.add_task(f"hub job {job}", total=spec.epochs)
        while True:
            status = client.job(job)
            p = status.get("progress") or {}
            if "epoch" in p:
                progress.update(bar, completed=p["epoch"], total=p["epochs"])
            if status["state"] in ("done", "failed"):
                break
            time.sleep(1.0)
    if status["state"] != "done":
        _fail(f"hub job {job} failed: {status.get('error')}", 1)
    client.job_artifact(job, out)
    card = json.loads((out / "model_card.json").read_text())
    if as_json:
        typer.echo(json.dumps({"job": job, "source": str(out), "card": card}, indent=1))
    else:
        _summary(card, str(out))


def train(
    spec_file: Annotated[Path, typer.Argument(metavar="SPEC", help="training spec YAML")],
    out: Annotated[
        Path | None, typer.Option(help="bundle source folder to write (default: <name>-source)")
    ] = None,
    hub: Annotated[str | None, typer.Option(help="train on this hub's job queue")] = None,
    bundle: Annotated[str | None, typer.Option(help="with --hub: whose samples")] = None,
    version: Annotated[int, typer.Option(min=1, help="with --hub: bundle version made")] = 1,
    token: Annotated[
        str | None, typer.Option(envvar="LEANLOOP_ADMIN_TOKEN", help="admin token for --hub")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the model card as JSON")] = False,
) -> None:
    """Train a classifier, detector or two-stage model from a training spec; write a bundle
    source with a model card (see docs/training.md)."""
    from trainer.datasets.report import DatasetError
    from trainer.spec import SpecError, load_spec

    try:
        spec = load_spec(spec_file)
        target = out if out is not None else Path(f"{spec.name}-source")
        if hub is not None:
            if not bundle:
                _fail("--hub needs --bundle (whose annotated samples to train on)", 2)
            _on_hub(spec, hub, token, str(bundle), version, target, as_json)
        else:
            _local(spec, target, as_json)
    except (SpecError, DatasetError) as e:
        _fail(str(e), 2)
    except LeanloopError as e:
        _fail(str(e), 1)
    except OSError as e:
        _fail(f"{e.filename or ''}: {e.strerror or e}".lstrip(": "), 1)
    except KeyboardInterrupt:
        _fail("interrupted", 1)
