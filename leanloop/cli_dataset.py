"""``leanloop dataset ...`` and ``leanloop ontology ...``: datasets in and out, ontology changes.

Datasets: ``check`` and ``convert`` work on local folders; ``import``/``export``/``list`` talk to
the hub (``--hub``, ``--token`` or ``LEANLOOP_ADMIN_TOKEN``). An import is read and validated
here first, so a bad dataset never leaves the machine: every problem is printed on its own line
(``where: what``) and the command ends with one ``error:`` line and exit code 2.

Ontology: changes are written as ordered expressions, applied left to right::

    leanloop ontology change things "merge cat+dog=animal" "split car=truck|sedan if aspect>=1.5"
        "rename bus=coach" "create van" "delete bike"

either on the hub (which remaps its stored samples) or, with ``--source DIR``, on a bundle
source's ``ontology.yaml`` (the next bundle then carries the changes, and devices remap their
store when they commit it).
"""

from __future__ import annotations

import io
import json
import re
import tarfile
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from leanloop._cli_common import HUB_URL, AdminToken, HubUrl, handled
from leanloop._cli_common import admin_client as _admin_client
from runtime.console import JsonFlag
from runtime.errors import ConfigError

__all__ = ["dataset_app", "ontology_app", "parse_change"]

dataset_app = typer.Typer(help="Datasets in and out: COCO, YOLO, Label Studio, folder-per-class.")
ontology_app = typer.Typer(help="Ontology versions and explicit class changes.")


def _busy(what: str) -> Any:
    """A spinner on stderr while long work runs (nothing when stderr is not a terminal)."""
    from rich.console import Console

    return Console(stderr=True).status(what)


def _say(as_json: bool, data: dict[str, Any], text: str) -> None:
    typer.echo(json.dumps(data, indent=2, default=str) if as_json else text)


def _read(fmt: str, path: Path) -> Any:
    """Read a dataset; on problems print each one, then exit 2 with one error line."""
    from trainer.datasets import DatasetError, read_dataset

    try:
        with _busy(f"reading {fmt} dataset {path} (every image is decoded)"):
            return read_dataset(fmt, path)
    except DatasetError as e:
        for p in e.problems:
            typer.echo(f"  {p}", err=True)
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None


def _summary(ds: Any) -> dict[str, Any]:
    return {
        "task": ds.task,
        "classes": ds.classes,
        "items": len(ds.items),
        "counts": ds.counts(),
        "ontology": {"id": ds.ontology_id, "version": ds.ontology_version},
    }


@dataset_app.command("check")
@handled
def dataset_check(
    fmt: Annotated[
        str, typer.Argument(metavar="FORMAT", help="coco | yolo | labelstudio | folder")
    ],
    path: Annotated[Path, typer.Argument(help="dataset folder (or its JSON file)")],
    as_json: JsonFlag = False,
) -> None:
    """Read and validate a dataset; list every problem."""
    ds = _read(fmt, path)
    s = _summary(ds)
    _say(as_json, s, f"{s['items']} images, {s['task']}, classes: {s['counts']}")


@dataset_app.command("convert")
@handled
def dataset_convert(
    fmt: Annotated[str, typer.Argument(metavar="FORMAT")],
    path: Annotated[Path, typer.Argument()],
    to: Annotated[str, typer.Option(help="output format")],
    out: Annotated[Path, typer.Option(help="output folder (must not exist)")],
    as_json: JsonFlag = False,
) -> None:
    """Convert a dataset from one format to another, locally."""
    from trainer.datasets import DatasetError, write_dataset

    if out.exists():
        raise ConfigError(f"{out}: already exists")
    ds = _read(fmt, path)
    try:
        write_dataset(to, ds, out)
    except DatasetError as e:
        raise ConfigError(str(e)) from e
    _say(
        as_json,
        {"images": len(ds.items), "format": to, "out": str(out)},
        f"wrote {len(ds.items)} images as {to} to {out}",
    )


@dataset_app.command("import")
@handled
def dataset_import(
    fmt: Annotated[str, typer.Argument(metavar="FORMAT")],
    path: Annotated[Path, typer.Argument()],
    name: Annotated[str, typer.Option(help="dataset name on the hub")],
    hub: HubUrl = HUB_URL,
    token: AdminToken = None,
    as_json: JsonFlag = False,
) -> None:
    """Validate a dataset here, then store it on the hub as the next version of NAME."""
    ds = _read(fmt, path)
    root = path.parent if path.suffix == ".json" else path
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(root, arcname=".")
    with _busy(f"uploading {len(buf.getvalue()) >> 10} KiB; the hub validates it again"):
        answer = _admin_client(hub, token).import_dataset(name, fmt, buf.getvalue())
    text = f"{name} v{answer['version']}: {len(ds.items)} images, {answer['counts']}"
    _say(as_json, answer, text)


@dataset_app.command("export")
@handled
def dataset_export(
    fmt: Annotated[str, typer.Argument(metavar="FORMAT")],
    path: Annotated[Path, typer.Argument(help="output folder (must not exist)")],
    name: Annotated[str, typer.Option(help="dataset name on the hub")],
    version: Annotated[int | None, typer.Option(help="version (default: latest)")] = None,
    hub: HubUrl = HUB_URL,
    token: AdminToken = None,
    as_json: JsonFlag = False,
) -> None:
    """Write a hub dataset version to PATH in FORMAT."""
    from hub.datasets import unpack_archive

    if path.exists():
        raise ConfigError(f"{path}: already exists")
    with _busy(f"exporting {name} as {fmt}"):
        data = _admin_client(hub, token).export_dataset(name, fmt, version)
    path.mkdir(parents=True)
    unpack_archive(data, path, max_bytes=1 << 40)
    _say(
        as_json,
        {"name": name, "format": fmt, "out": str(path)},
        f"wrote {name} as {fmt} to {path}",
    )


@dataset_app.command("list")
@handled
def dataset_list(
    hub: HubUrl = HUB_URL, token: AdminToken = None, as_json: JsonFlag = False
) -> None:
    """Dataset versions stored on the hub."""
    rows = _admin_client(hub, token).datasets()
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        onto = r["ontology"]
        typer.echo(
            f"{r['name']} v{r['version']}  {r['task']}  {r['items']} images  "
            f"ontology {onto['id']} v{onto['version']}"
        )


@dataset_app.command("merge")
@handled
def dataset_merge(
    sources: Annotated[
        list[str], typer.Argument(help="FORMAT:PATH of each dataset, e.g. coco:./a yolo:./b")
    ],
    to: Annotated[str, typer.Option(help="output format (native: what leanloop train reads)")],
    out: Annotated[Path, typer.Option(help="output folder (must not exist)")],
    history: Annotated[
        Path | None,
        typer.Option(help="ontology history: YAML/JSON list of {version, classes, changes}"),
    ] = None,
    hub: Annotated[
        str | None, typer.Option(help="take the ontology history from this hub instead")
    ] = None,
    token: AdminToken = None,
    as_json: JsonFlag = False,
) -> None:
    """One training set from several datasets under the newest ontology version; datasets of
    different versions are refused unless the history (the mapping) is known."""
    from trainer.datasets import DatasetError, write_dataset
    from trainer.datasets.align import OntologyStep, align_datasets

    if out.exists():
        raise ConfigError(f"{out}: already exists")
    datasets = []
    for src in sources:
        fmt, sep, path = src.partition(":")
        if not sep or not path:
            raise ConfigError(f"{src!r}: write FORMAT:PATH, e.g. coco:./annotations")
        datasets.append(_read(fmt, Path(path)))
    steps = None
    if history is not None:
        try:
            raw = yaml.safe_load(history.read_text())
            steps = [OntologyStep.model_validate(v) for v in raw]
        except (OSError, yaml.YAMLError, TypeError, ValueError) as e:
            raise ConfigError(f"{history}: {str(e).splitlines()[0]}") from e
    elif hub is not None and datasets[0].ontology_id:
        raw = _admin_client(hub, token).ontology(datasets[0].ontology_id)
        steps = [OntologyStep.model_validate(v) for v in raw]
    try:
        merged = align_datasets(datasets, steps)
    except DatasetError as e:
        for p in e.problems:
            typer.echo(f"  {p}", err=True)
        raise ConfigError(str(e)) from e
    try:
        write_dataset(to, merged, out)
    except DatasetError as e:
        raise ConfigError(str(e)) from e
    _say(
        as_json,
        {
            "images": len(merged.items),
            "ontology": merged.ontology_id,
            "ontology_version": merged.ontology_version,
            "format": to,
            "out": str(out),
        },
        f"wrote {len(merged.items)} images, ontology {merged.ontology_id} "
        f"v{merged.ontology_version}, as {to} to {out}",
    )


# ---- ontology ---------------------------------------------------------------------------

_SPLIT = re.compile(
    r"^split\s+(?P<src>[^=\s]+)\s*=\s*(?P<parts>\S+)"
    r"(?:\s+if\s+(?P<by>aspect|area|width|height)\s*>=\s*(?P<t>[0-9]*\.?[0-9]+))?$"
)


def parse_change(text: str) -> dict[str, Any]:
    """One change expression as the API's change object. Raises ConfigError with the forms."""
    t = " ".join(text.split())
    op, _, rest = t.partition(" ")
    if op == "create" and rest and " " not in rest:
        return {"op": "create", "name": rest}
    if op == "delete" and rest and " " not in rest:
        return {"op": "delete", "name": rest}
    if op == "rename" and re.fullmatch(r"[^=\s]+\s*=\s*[^=\s]+", rest):
        old, new = (x.strip() for x in rest.split("="))
        return {"op": "rename", "old": old, "new": new}
    if op == "merge" and re.fullmatch(r"[^=\s]+\s*=\s*[^=\s]+", rest):
        srcs, into = (x.strip() for x in rest.split("="))
        return {"op": "merge", "sources": srcs.split("+"), "into": into}
    m = _SPLIT.match(t)
    if m:
        parts = m["parts"].split("|")
        change: dict[str, Any] = {"op": "split", "source": m["src"], "into": parts}
        if m["by"]:
            if len(parts) != 2:
                raise ConfigError(f"{text!r}: a split rule needs exactly two parts (above|below)")
            change["rule"] = {
                "by": m["by"], "threshold": float(m["t"]), "above": parts[0], "below": parts[1]
            }  # fmt: skip
        return change
    raise ConfigError(
        f"cannot read change {text!r}; write one of: 'create NAME', 'delete NAME', "
        "'rename OLD=NEW', 'merge A+B=C', 'split C=A|B', 'split C=A|B if aspect>=1.5' "
        "(A when the box measure is at least the threshold; also area, width, height)"
    )


def _change_source(source: Path, changes: list[dict[str, Any]]) -> dict[str, Any]:
    """Apply changes to ``source/ontology.yaml``: version + 1, classes, changes, mapping."""
    from pydantic import TypeAdapter, ValidationError

    from runtime._atomic import atomic_write_bytes
    from runtime.bundle.manifest import Ontology
    from runtime.ontology import Change, OntologyChangeError, apply_changes

    path = source / "ontology.yaml"
    try:
        current = Ontology.model_validate(yaml.safe_load(path.read_text()))
        parsed = TypeAdapter(list[Change]).validate_python(changes)
        classes, mapping = apply_changes(current.classes, parsed)
    except FileNotFoundError:
        raise ConfigError(f"{path}: missing") from None
    except (yaml.YAMLError, ValidationError, OntologyChangeError) as e:
        raise ConfigError(f"{path}: {str(e).splitlines()[0]}") from e
    new = Ontology(
        id=current.id,
        version=current.version + 1,
        classes=classes,
        mapping_from_previous=mapping.to_manifest_mapping(),
        previous_version=current.version,
        changes=parsed,
    )
    data = new.model_dump(mode="json", exclude_defaults=True)
    atomic_write_bytes(path, yaml.safe_dump(data, sort_keys=False).encode())
    return data


@ontology_app.command("create")
@handled
def ontology_create(
    onto_id: Annotated[str, typer.Argument(metavar="ID")],
    classes: Annotated[list[str], typer.Argument(help="class names, in model output order")],
    version: Annotated[int, typer.Option(help="first version number")] = 1,
    hub: HubUrl = HUB_URL,
    token: AdminToken = None,
    as_json: JsonFlag = False,
) -> None:
    """Start an ontology on the hub."""
    got = _admin_client(hub, token).create_ontology(onto_id, classes, version)
    _say(as_json, got, f"{got['id']} v{got['version']}: {', '.join(got['classes'])}")


@ontology_app.command("show")
@handled
def ontology_show(
    onto_id: Annotated[str, typer.Argument(metavar="ID")],
    hub: HubUrl = HUB_URL,
    token: AdminToken = None,
    as_json: JsonFlag = False,
) -> None:
    """Every version of an ontology with its changes."""
    versions = _admin_client(hub, token).ontology(onto_id)
    if as_json:
        typer.echo(json.dumps(versions, indent=2))
        return
    for v in versions:
        typer.echo(f"v{v['version']}: {', '.join(v['classes'])}")
        for c in v["changes"]:
            typer.echo(f"    {json.dumps(c)}")


@ontology_app.command("change")
@handled
def ontology_change(
    onto_id: Annotated[str, typer.Argument(metavar="ID")],
    changes: Annotated[list[str], typer.Argument(help="change expressions, applied in order")],
    base_version: Annotated[
        int | None, typer.Option(help="refuse unless the hub's latest version is this one")
    ] = None,
    source: Annotated[
        Path | None, typer.Option(help="change this bundle source's ontology.yaml instead")
    ] = None,
    hub: HubUrl = HUB_URL,
    token: AdminToken = None,
    as_json: JsonFlag = False,
) -> None:
    """Create, rename, merge, split or delete classes: the next ontology version."""
    parsed = [parse_change(c) for c in changes]
    if source is not None:
        data = _change_source(source, parsed)
        if data["id"] != onto_id:
            raise ConfigError(f"{source}/ontology.yaml is ontology {data['id']!r}, not {onto_id!r}")
        out: dict[str, Any] = data
    else:
        out = _admin_client(hub, token).change_ontology(onto_id, parsed, base_version)
    if as_json:
        typer.echo(json.dumps(out, indent=2))
        return
    typer.echo(f"{onto_id} v{out['version']}: {', '.join(out['classes'])}")
    if "remapped" in out:
        typer.echo(
            f"remapped {out['remapped']} sample(s); {len(out['needs_review'])} back in the "
            "queue as needs review"
        )


def stamp_source(source: Path, versions: list[dict[str, Any]]) -> dict[str, Any]:
    """Give ``source/ontology.yaml`` the hub's version whose classes it has (see
    :func:`hub.ontology.stamp_ontology`). Raises ConfigError."""
    from pydantic import ValidationError

    from hub.ontology import stamp_ontology
    from runtime._atomic import atomic_write_bytes
    from runtime.bundle.manifest import Ontology

    path = source / "ontology.yaml"
    try:
        current = Ontology.model_validate(yaml.safe_load(path.read_text()))
        new = stamp_ontology(current, versions)
    except FileNotFoundError:
        raise ConfigError(f"{path}: missing") from None
    except (yaml.YAMLError, ValidationError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"{path}: {str(e).splitlines()[0]}") from e
    data = new.model_dump(mode="json", exclude_defaults=True)
    atomic_write_bytes(path, yaml.safe_dump(data, sort_keys=False).encode())
    return data


@ontology_app.command("stamp")
@handled
def ontology_stamp(
    source: Annotated[Path, typer.Argument(help="bundle source folder (its ontology.yaml)")],
    history: Annotated[
        Path | None,
        typer.Option(
            help="ontology history YAML (list of {version, classes, changes}) instead of the hub's"
        ),
    ] = None,
    hub: HubUrl = HUB_URL,
    token: AdminToken = None,
    as_json: JsonFlag = False,
) -> None:
    """Write the ontology version (number, changes, mapping) whose classes a bundle source has
    into its ontology.yaml, so devices remap their store when they commit the bundle."""
    try:
        onto_id = str(yaml.safe_load((source / "ontology.yaml").read_text())["id"])
    except (OSError, yaml.YAMLError, KeyError, TypeError) as e:
        raise ConfigError(f"{source / 'ontology.yaml'}: no ontology id: {e}") from e
    if history is not None:
        try:
            versions = list(yaml.safe_load(history.read_text()))
        except (OSError, yaml.YAMLError, TypeError) as e:
            raise ConfigError(f"{history}: {str(e).splitlines()[0]}") from e
        versions = [{"changes": [], **v} for v in versions if isinstance(v, dict)]
    else:
        versions = _admin_client(hub, token).ontology(onto_id)
    data = stamp_source(source, versions)
    _say(as_json, data, f"{source / 'ontology.yaml'}: {data['id']} v{data['version']}")


@ontology_app.command("weakness")
@handled
def ontology_weakness(
    onto_id: Annotated[str, typer.Argument(metavar="ID")],
    top: Annotated[int, typer.Option(help="most-confused pairs to list")] = 10,
    hub: HubUrl = HUB_URL,
    token: AdminToken = None,
    as_json: JsonFlag = False,
) -> None:
    """Per class: predicted vs annotated vs corrected across the fleet; most-confused pairs."""
    rep = _admin_client(hub, token).ontology_weakness(onto_id, top)
    if as_json:
        typer.echo(json.dumps(rep, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"{onto_id} v{rep['version']}: predictions vs annotations vs corrections")
    for col in ("class", "predicted", "annotated", "corrected from", "corrected to", "flags"):
        t.add_column(col, justify="left" if col in ("class", "flags") else "right")
    for name, row in rep["classes"].items():
        t.add_row(
            name,
            str(row["predicted"]),
            str(row["annotated"]),
            str(row["corrected_from"]),
            str(row["corrected_to"]),
            ", ".join(row["flags"]),
        )
    Console().print(t)
    for p in rep["confused_pairs"]:
        typer.echo(f"confused: predicted {p['predicted']!r} for {p['actual']!r} x{p['count']}")
