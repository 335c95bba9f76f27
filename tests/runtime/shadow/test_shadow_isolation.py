"""No code from outside the verified slot (issue 12): the ``evil.py`` attack on a real worker.

The attack: a candidate (signed, e.g. with a leaked targets key) names a plug-in by *module*
name, and an ``evil.py`` waits where Python looks for modules — the service's working directory
(the state folder), ``PYTHONPATH``, or the bundle folder itself without being listed. Importing
it writes a marker file outside the state folder. The worker (``python -I`` started in ``/``)
and the loader (plug-ins only as listed bundle files, bytes checked against the manifest) must
refuse every variant before a line of ``evil.py`` runs; the candidate is disabled instead.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from shadowkit import build

from runtime.bundle.loader import load_bundle
from runtime.errors import BundleError, PipelineError
from runtime.shadow.runner import ShadowRunner

EVIL = """\
from pathlib import Path
Path({marker!r}).write_text("pwned")
def run(*args, **kwargs):
    Path({marker!r}).write_text("pwned")
"""


def _resign(bundle: Path, edit: Callable[[Path], None], listed: list[str]) -> None:
    """Apply ``edit`` to the bundle and rewrite the manifest's file list as its signer would
    (``listed``: new files it lists too); the hashes of every listed file are recomputed."""
    edit(bundle)
    mpath = bundle / "manifest.json"
    m = json.loads(mpath.read_text())
    for rel in [*m["files"], *listed]:
        data = (bundle / rel).read_bytes()
        m["files"][rel] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    mpath.write_text(json.dumps(m))


def _set_plugin(ref: str) -> Callable[[Path], None]:
    def edit(bundle: Path) -> None:
        pipe = yaml.safe_load((bundle / "pipeline.yaml").read_text())
        pipe["stages"][0]["pre"]["plugin"] = ref
        (bundle / "pipeline.yaml").write_text(yaml.safe_dump(pipe))

    return edit


def _variant(name: str, bundle: Path, marker: Path) -> None:
    evil = EVIL.format(marker=str(marker))
    if name == "module-name":  # pre.plugin: "evil:run", evil.py shipped and listed
        (bundle / "evil.py").write_text(evil)
        _resign(bundle, _set_plugin("evil:run"), ["evil.py"])
    elif name == "unlisted-file":  # "evil.py:run", the file is in the slot but not signed
        _resign(bundle, _set_plugin("evil.py:run"), [])
        (bundle / "evil.py").write_text(evil)
    elif name == "plugin-imports-by-name":  # a listed plug-in does `import evil`
        (bundle / "plugins").mkdir()
        (bundle / "plugins" / "ok.py").write_text("import evil\ndef run(image, ctx): ...\n")
        (bundle / "evil.py").write_text(evil)
        _resign(bundle, _set_plugin("plugins/ok.py:run"), ["plugins/ok.py", "evil.py"])
    elif name == "changed-after-verify":  # listed, then swapped for evil code in the slot
        (bundle / "plugins").mkdir()
        (bundle / "plugins" / "ok.py").write_text("def run(image, ctx): ...\n")
        _resign(bundle, _set_plugin("plugins/ok.py:run"), ["plugins/ok.py"])
        (bundle / "plugins" / "ok.py").write_text(evil)
    else:
        raise AssertionError(name)


VARIANTS = ["module-name", "unlisted-file", "plugin-imports-by-name", "changed-after-verify"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_candidate_never_runs_evil_py_when_it_names_code_outside_the_verified_slot(
    variant: str,
    tmp_path: Path,
    shadow_classifier: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    marker = tmp_path / "outside" / "pwned"
    marker.parent.mkdir()
    state = tmp_path / "state"  # the service's working directory, as under systemd
    state.mkdir()
    lure = EVIL.format(marker=str(marker))
    (state / "evil.py").write_text(lure)
    (tmp_path / "path").mkdir()
    (tmp_path / "path" / "evil.py").write_text(lure)
    bundle = build(tmp_path / "b", shadow_classifier, 2)
    _variant(variant, bundle, marker)
    monkeypatch.chdir(state)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "path"))

    runner = ShadowRunner(bundle, lambda *a: None, load_timeout_s=60.0, nice=5)
    runner.start()
    try:
        deadline = time.monotonic() + 60
        while runner.state == "starting" and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        runner.stop()
    assert runner.state == "disabled", runner.state
    assert runner.reason is not None and "candidate does not load" in runner.reason
    assert not marker.exists(), f"{variant}: evil.py ran"
    # In-process (the manager's promotion path) refuses it the same way.
    with pytest.raises((PipelineError, BundleError)):
        load_bundle(bundle, verify=variant != "changed-after-verify").close()
    assert not marker.exists()


@pytest.mark.skipif(not Path("/proc/self/cwd").exists(), reason="needs /proc")
def test_worker_runs_isolated_in_a_neutral_folder_when_the_service_runs_in_its_state_folder(
    tmp_path: Path, shadow_classifier: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = build(tmp_path / "b", shadow_classifier, 2)
    monkeypatch.chdir(tmp_path)
    runner = ShadowRunner(bundle, lambda *a: None, load_timeout_s=60.0, nice=5)
    runner.start()
    try:
        deadline = time.monotonic() + 60
        while runner.state == "starting" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert runner.state == "running", runner.reason
        pid = runner.pid
        assert pid is not None
        assert Path(f"/proc/{pid}/cwd").resolve() == Path("/")
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert argv[1:4] == [b"-I", b"-m", b"runtime.shadow.worker"]
    finally:
        runner.stop()


def test_health_check_fails_when_a_listed_plugin_raises_on_the_golden_images(
    tmp_path: Path, shadow_classifier: Path
) -> None:
    from runtime.bundle.health import run_health_check

    bundle = build(tmp_path / "b", shadow_classifier, 2, plugin="raise_on_poison")
    loaded = load_bundle(bundle)
    run_health_check(loaded)  # the built plug-in passes on the golden images
    loaded.close()
    plugin = bundle / "plugins" / "shadow_plugins.py"
    text = plugin.read_text().replace(
        "    if _poison(image):\n        raise", "    if True:\n        raise"
    )
    _resign(bundle, lambda b: plugin.write_text(text), [])
    loaded = load_bundle(bundle)
    try:
        with pytest.raises(BundleError, match=r"health check failed on golden/.*poison frame"):
            run_health_check(loaded)
    finally:
        loaded.close()
