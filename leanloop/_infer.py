"""``leanloop infer``: a bundle's pipeline on image files, with the CLI's error contract.

Every image is tried; a good one prints its prediction on stdout, a bad one (missing,
unreadable, not an image, over the pixel limit) prints one ``error: <file>: <reason>`` line on
stderr — once — and the others go on. The exit code says the worst that happened: 0 every image
ran, 2 some input was bad (missing or undecodable), 1 a good image failed in the pipeline (an
engine error). Plain output starts with one ``engines: model=engine, ...`` line; with
``--json`` each image gets its JSON line on stdout (errors included), a good one with an
``engines`` object (model key -> engine that ran it).

Engines print to the process's stderr from C++ (LiteRT's ``INFO: Created TensorFlow Lite
XNNPACK delegate for CPU.``); without ``--verbose`` that chatter is kept off the terminal:
:func:`native_stderr_filtered` points file descriptor 2 at a temporary file while leanloop's
own messages go to the real stderr, and afterwards replays what the engines printed except
their ``INFO`` lines.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import typer

__all__ = ["native_stderr_filtered", "run_infer"]

_CHATTER = ("INFO: ",)  # lines engines print at INFO level (LiteRT/TFLite minimal logging)


@contextlib.contextmanager
def native_stderr_filtered() -> Iterator[None]:
    """Hide engines' INFO lines written to fd 2; Python's own stderr is untouched."""
    sys.stderr.flush()
    saved = os.dup(2)
    old_stderr = sys.stderr
    try:
        python_on_fd2 = old_stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):  # a captured stream (tests): leave it alone
        python_on_fd2 = False
    own = (
        os.fdopen(os.dup(saved), "w", buffering=1, encoding="utf-8", errors="replace")
        if python_on_fd2
        else None
    )
    with tempfile.TemporaryFile() as native:
        os.dup2(native.fileno(), 2)
        if own is not None:
            sys.stderr = own
        try:
            yield
        finally:
            sys.stderr = old_stderr
            if own is not None:
                own.close()
            os.dup2(saved, 2)
            os.close(saved)
            native.seek(0)
            kept = [
                line
                for line in native.read().decode("utf-8", "replace").splitlines(keepends=True)
                if not line.startswith(_CHATTER)
            ]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def _read(path: Path) -> tuple[bytes | None, str | None]:
    try:
        return path.read_bytes(), None
    except FileNotFoundError:
        return None, "no such file"
    except IsADirectoryError:
        return None, "is a folder, not an image file"
    except OSError as e:
        return None, f"cannot read: {e.strerror or e}"


def run_infer(
    images: Sequence[Path],
    bundle: Path,
    backend: str,
    threads: int,
    as_json: bool,
) -> int:
    """Run the bundle on every image; returns the exit code (see the module story).

    Raises LeanloopError when the bundle itself cannot be loaded.
    """
    from runtime.backends.base import BackendOptions
    from runtime.bundle.loader import load_bundle

    loaded = load_bundle(bundle, backend, BackendOptions(threads=threads))
    bad_input = failed = False
    try:
        if not as_json:
            typer.echo("engines: " + ", ".join(f"{k}={e}" for k, e in loaded.engines.items()))
        for img in images:
            data, why = _read(img)
            if data is None:
                bad_input = True
                typer.echo(f"error: {img}: {why}", err=True)
                if as_json:
                    typer.echo(json.dumps({"frame_id": str(img), "error": why}))
                continue
            image, pred = loaded.pipeline.run_encoded(data, frame_id=str(img))
            if pred.error:
                if image is None:
                    bad_input = True
                else:
                    failed = True
                typer.echo(f"error: {img}: {pred.error}", err=True)
                if as_json:
                    typer.echo(json.dumps(pred.to_dict()))
                continue
            if as_json:
                typer.echo(json.dumps({**pred.to_dict(), "engines": loaded.engines}))
            else:
                items = ", ".join(
                    f"{i.label} {i.score:.2f}" + (f" @{[round(v) for v in i.box]}" if i.box else "")
                    for i in pred.final_items()
                )
                typer.echo(f"{img}: {items or '(nothing)'}  [{pred.latency_ms:.1f} ms]")
    finally:
        loaded.close()
    return 2 if bad_input else 1 if failed else 0
