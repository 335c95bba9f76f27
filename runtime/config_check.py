"""``leanloop config check FILE``: every problem of a device config at once, with its YAML line.

:func:`check_config` validates the file with the very model the device loads
(:class:`runtime.config.DeviceConfig`) and turns *every* validation error into a
:class:`Finding` that names the key, the line of the YAML file it is on and, for a misspelt key
or value, the closest valid ones ("did you mean", :func:`difflib.get_close_matches`). The
inference engines are checked too (:func:`engine_problems`: an unknown name, or none of the
preferred engines installed here); the device refuses such a config at load, before it touches
any slot. Values that are valid but make no sense come back as warnings: a store cap too small
to hold one sample, no source folder, no hub, a hub without a pinned root.
"""

from __future__ import annotations

import difflib
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ValidationError

from runtime._limits import safe_yaml
from runtime.config import DeviceConfig
from runtime.sources import FolderSourceSettings

__all__ = ["Finding", "check_config", "engine_names", "engine_problems"]

_SMALL_SAMPLE = 16 * 1024
"""Bytes of a small stored sample (a JPEG of a small frame and its meta), for the cap warning."""


@dataclass(frozen=True)
class Finding:
    level: Literal["error", "warning"]
    key: str  # dotted path of the key ("" for the whole file)
    line: int | None  # 1-based line in the YAML file
    message: str

    def render(self, path: Path | str) -> str:
        where = f"{path}:{self.line}" if self.line is not None else str(path)
        key = f" {self.key}:" if self.key else ""
        return f"{self.level}: {where}:{key} {self.message}"


def engine_names(backend: Any) -> list[str] | None:
    """The engine names of ``inference.backend`` (a name or an ordered preference list);
    None when it is neither."""
    if isinstance(backend, str):
        return [backend]
    if isinstance(backend, list | tuple) and all(isinstance(b, str) for b in backend):
        return list(backend)
    return None


def engine_problems(backend: Any) -> list[str]:
    """What is wrong with ``inference.backend`` on this machine: unknown names (with the
    closest known one), or no preferred engine installed. Empty: fine."""
    from runtime.backends import REGISTRY, unavailable_reason

    names = engine_names(backend)
    if names is None:
        return []  # a type error: the model reports it
    names = [n.strip() for part in names for n in part.split(",") if n.strip()]
    if not names:
        return ["names no engine"]
    out = []
    for n in names:
        if n not in REGISTRY:
            out.append(f"unknown engine {n!r}{_did_you_mean(n, list(REGISTRY))}")
    if out:
        return out
    why: dict[str, str] = {}
    for n in names:  # in order of preference: the first installed one is enough
        reason = unavailable_reason(n)
        if reason is None:
            return []
        why[n] = reason
    reasons = "; ".join(f"{n}: {r}" for n, r in why.items())
    return [f"no engine of {', '.join(names)} is installed here ({reasons})"]


def _did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=3, cutoff=0.6)
    if not close:
        return ""
    return " (did you mean " + " or ".join(repr(c) for c in close) + "?)"


def _lines(
    node: yaml.Node, path: tuple[str | int, ...], out: dict[tuple[str | int, ...], int]
) -> None:
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            key = k.value
            out[(*path, key)] = k.start_mark.line + 1
            _lines(v, (*path, key), out)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            _lines(v, (*path, i), out)


def _line_of(loc: tuple[str | int, ...], lines: dict[tuple[str | int, ...], int]) -> int | None:
    for n in range(len(loc), -1, -1):
        if loc[:n] in lines:
            return lines[loc[:n]]
    return None


def _model_at(loc: tuple[str | int, ...]) -> type[BaseModel] | None:
    """The config model that holds the last key of ``loc`` (for "did you mean")."""
    model: Any = DeviceConfig
    parts = list(loc)
    while parts:
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None
        field = model.model_fields.get(str(parts.pop(0)))
        if field is None:
            return None
        annotation = field.annotation
        if typing.get_origin(annotation) is dict and parts:
            parts.pop(0)  # a key of the mapping (e.g. a class name under store.quotas)
            annotation = typing.get_args(annotation)[1]
        model = _submodel(annotation)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _submodel(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def _suggest(err: dict[str, Any], loc: tuple[str | int, ...]) -> str:
    if err["type"] == "extra_forbidden" and loc:
        parent = _model_at(loc[:-1])
        if parent is not None:
            return _did_you_mean(str(loc[-1]), list(parent.model_fields))
    if err["type"] == "literal_error" and isinstance(err.get("input"), str):
        expected = str((err.get("ctx") or {}).get("expected", ""))
        choices = [c.strip().strip("'\"") for c in expected.replace(" or ", ",").split(",")]
        return _did_you_mean(err["input"], [c for c in choices if c])
    return ""


def _clean_loc(loc: tuple[Any, ...]) -> tuple[str | int, ...]:
    """Drop pydantic's union branch labels (e.g. ``str``, ``list[str]``) from a location."""
    return tuple(p for p in loc if isinstance(p, int) or ("[" not in str(p) and p != "str"))


def check_config(path: Path) -> list[Finding]:
    """Every error and warning of the device config at ``path`` (errors first)."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return [Finding("error", "", None, "no such file")]
    except (OSError, UnicodeDecodeError) as e:
        return [Finding("error", "", None, f"cannot read: {e}")]
    try:
        node = yaml.compose(text)
        data = safe_yaml(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        what = getattr(e, "problem", None) or str(e).splitlines()[0]
        return [Finding("error", "", line, f"not readable YAML: {what}")]
    lines: dict[tuple[str | int, ...], int] = {}
    if node is not None:
        _lines(node, (), lines)
    data = data if data is not None else {}
    if not isinstance(data, dict):
        return [Finding("error", "", 1, "expected a mapping at the top level")]
    errors: list[Finding] = []
    cfg: DeviceConfig | None = None
    try:
        cfg = DeviceConfig.model_validate(data)
    except ValidationError as e:
        for err in e.errors():
            loc = _clean_loc(tuple(err["loc"]))
            msg = err["msg"] + _suggest(dict(err), loc)
            errors.append(Finding("error", ".".join(map(str, loc)), _line_of(loc, lines), msg))
    inference = data.get("inference")
    backend = inference.get("backend") if isinstance(inference, dict) else None
    problems = engine_problems(backend) if backend is not None else []
    if problems:  # said better here (with "did you mean") than by the model's own check
        errors = [f for f in errors if not f.key.startswith("inference.backend")]
        line = _line_of(("inference", "backend"), lines)
        errors += [Finding("error", "inference.backend", line, p) for p in problems]
    errors.sort(key=lambda f: f.line or 0)
    return errors + (_warnings(cfg, data, lines) if cfg is not None else [])


def _warnings(
    cfg: DeviceConfig, data: dict[str, Any], lines: dict[tuple[str | int, ...], int]
) -> list[Finding]:
    from runtime.store.lmdb_store import reserve_bytes

    out: list[Finding] = []

    def warn(loc: tuple[str, ...], message: str) -> None:
        out.append(Finding("warning", ".".join(loc), _line_of(loc, lines), message))

    one = _SMALL_SAMPLE + reserve_bytes(_SMALL_SAMPLE)
    if cfg.store.max_bytes < one:
        warn(
            ("store", "max_bytes"),
            f"{cfg.store.max_bytes} bytes cannot hold even one small sample (about {one} bytes "
            "with the store's reserve): nothing will be kept",
        )
    src = cfg.source
    if "source" not in data:
        where = f" from {src.path}" if isinstance(src, FolderSourceSettings) else ""
        warn(("source",), f"no source configured: frames are read{where}")
    elif isinstance(src, FolderSourceSettings) and not src.path.is_dir():
        warn(("source", "path"), f"{src.path} is not a folder (yet): no frames until it is")
    if cfg.hub.url is None:
        warn(("hub",), "no hub (hub.url): the device runs offline, never updates or uploads")
    elif cfg.root is None:
        warn(("root",), "a hub but no pinned root: the device cannot verify and installs nothing")
    elif not cfg.root.is_file():
        warn(("root",), f"{cfg.root} is not a file: the device cannot verify bundles")
    if (
        cfg.hub.url is not None
        and cfg.hub.enroll_token is None
        and cfg.hub.enroll_token_file is None
    ):
        state = cfg.state_dir / "device.json"
        if not state.exists():
            warn(("hub",), "no enroll_token (or enroll_token_file) and not enrolled yet")
    return out
