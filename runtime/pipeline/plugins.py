"""Plug-ins: code a bundle ships, imported only as files of that (verified) bundle.

A ``pre.plugin`` or ``post: {type: plugin, function: ...}`` names ``<file>.py:<function>``,
where ``<file>.py`` is a path inside the bundle that its manifest lists. :class:`PluginLoader`
is the only way the pipeline imports one: it reads the file through the bundle folder (no
``..``, no absolute path, no symbolic link), checks the bytes against the manifest's sha256,
and executes exactly those bytes as a fresh module that is never put into ``sys.modules`` and
never looked up on ``sys.path``. So a plug-in name can never pick up a module planted in the
working directory, the state folder or anywhere else on the path (issue 12: a candidate that
shipped ``evil.py`` next to the state folder used to be imported by name).

A plug-in may import installed libraries (numpy, cv2, ``runtime``) but not other bundle files
by module name; one file holds a plug-in's code.

Signatures (the contexts carry what a stage knows, so a plug-in needs no globals)::

    pre:  fn(image: np.ndarray[H, W, 3] uint8 BGR, ctx: PreContext)
              -> np.ndarray | tuple[np.ndarray, Letterbox]
    post: fn(outputs: list[np.ndarray], ctx: PostContext) -> list[Item]
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import Any

from runtime.errors import PipelineError
from runtime.pipeline.graph import PreSpec, plugin_ref_parts

__all__ = ["MAX_PLUGIN_BYTES", "PluginLoader", "PreContext", "split_plugin_ref"]

MAX_PLUGIN_BYTES = 1 << 20
"""A plug-in source file larger than this is refused before it is read."""


@dataclass
class PreContext:
    """What a ``pre`` plug-in gets besides the image."""

    spec: PreSpec
    input_name: str  # the model input the tensor feeds
    input_shape: list[int | str]  # as the engine reports it (a string is a dynamic axis)
    input_size: tuple[int, int]  # (width, height) the spec resizes to
    params: dict[str, Any] = field(default_factory=dict)  # the spec's ``plugin_params``


def split_plugin_ref(ref: str) -> tuple[str, str]:
    """``'plugins/x.py:fn'`` -> ``('plugins/x.py', 'fn')``. Raises PipelineError otherwise."""
    try:
        return plugin_ref_parts(ref)
    except ValueError as e:
        raise PipelineError(str(e)) from e


class _VerifiedSource(importlib.abc.Loader):
    """Executes source bytes that were already read and checked (never re-reads the file)."""

    def __init__(self, source: bytes, origin: str) -> None:
        self._source = source
        self._origin = origin

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None  # the default module object

    def exec_module(self, module: ModuleType) -> None:
        code = compile(self._source, self._origin, "exec", dont_inherit=True)
        exec(code, module.__dict__)


class PluginLoader:
    """Imports plug-in functions from the files of one bundle folder (see the module story).

    ``files`` maps each importable file (relative POSIX path) to its sha256 as the verified
    manifest lists it; nothing else can be imported.
    """

    def __init__(self, root: Path, files: Mapping[str, str]) -> None:
        self.root = Path(root)
        self.files = {rel: sha for rel, sha in files.items() if rel.endswith(".py")}
        self._modules: dict[str, ModuleType] = {}

    @classmethod
    def for_folder(cls, root: Path, names: list[str]) -> PluginLoader:
        """A loader trusting the current content of ``names`` under ``root`` (tests, tools)."""
        files = {n: hashlib.sha256((Path(root) / n).read_bytes()).hexdigest() for n in names}
        return cls(root, files)

    def load(self, ref: str) -> Callable[..., Any]:
        """The function ``ref`` names. Raises PipelineError (one line) for anything off."""
        rel, attr = split_plugin_ref(ref)
        if rel not in self.files:
            raise PipelineError(f"plug-in {ref!r}: {rel} is not a file the manifest lists")
        module = self._modules.get(rel)
        if module is None:
            module = self._import(ref, rel)
            self._modules[rel] = module
        fn = getattr(module, attr, None)
        if fn is None:
            raise PipelineError(f"plug-in {ref!r}: {rel} has no {attr!r}")
        if not callable(fn):
            raise PipelineError(f"plug-in {ref!r} is not callable")
        return fn

    def _read(self, ref: str, rel: str) -> bytes:
        path = self.root
        for part in PurePosixPath(rel).parts:  # refuse a link anywhere on the way
            path = path / part
            try:
                st = os.lstat(path)
            except OSError as e:
                raise PipelineError(f"plug-in {ref!r}: cannot read {rel}: {e.strerror}") from e
            if stat.S_ISLNK(st.st_mode):
                raise PipelineError(f"plug-in {ref!r}: {rel} is or goes through a link")
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_PLUGIN_BYTES:
            raise PipelineError(f"plug-in {ref!r}: {rel} is not a file under 1 MiB")
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "rb") as f:
            data = f.read(MAX_PLUGIN_BYTES + 1)
        if hashlib.sha256(data).hexdigest() != self.files[rel]:
            raise PipelineError(f"plug-in {ref!r}: {rel} does not match its sha256")
        return data

    def _import(self, ref: str, rel: str) -> ModuleType:
        source = self._read(ref, rel)
        origin = str(self.root / rel)
        name = "leanloop_plugin_" + hashlib.sha256(source).hexdigest()[:16]
        spec = importlib.util.spec_from_loader(name, _VerifiedSource(source, origin), origin=origin)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as e:  # the plug-in's own import-time error, in one line
            first = (str(e).strip() or type(e).__name__).splitlines()[0]
            raise PipelineError(f"plug-in {ref!r} failed to import: {first}") from e
        return module
