"""Bundle paths and sizes (issue 12): health-check paths, unlisted files, size caps.

A signed manifest whose health check names ``../`` or an absolute path is refused by the hub at
publish and by every parser a device runs; ``leanloop bundle verify`` reports files the manifest
does not list; oversized ``pipeline.yaml``/``manifest.json``/config files are refused before
they are parsed (a 4 MiB YAML flow list used to take about a minute to parse).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from loopkit import BOXES, BundleMaker, Loop
from typer.testing import CliRunner

from hub.client import HubAdminClient
from hub.errors import HubError
from hub.signing import sign_targets
from hub.testing import LiveHub
from leanloop.cli import app
from runtime.bundle.loader import load_bundle, read_manifest
from runtime.bundle.manifest import Manifest
from runtime.config import load_config
from runtime.errors import BundleError, ConfigError, PipelineError
from runtime.pipeline.graph import load_pipeline_spec

ESCAPES = ["../../etc/passwd", "/etc/passwd", "golden/../../x.png", "golden\\x.png"]


def _with_health(manifest: dict[str, Any], inputs: list[str], expected: str) -> dict[str, Any]:
    m = json.loads(json.dumps(manifest))
    m["health"] = {"inputs": inputs, "expected": expected}
    return m


@pytest.mark.parametrize("bad", ESCAPES)
def test_manifest_refuses_health_paths_when_they_escape_or_are_unlisted(
    make_bundle: BundleMaker, bad: str
) -> None:
    m = json.loads((make_bundle(1, BOXES) / "manifest.json").read_text())
    expected = m["health"]["expected"]
    with pytest.raises(ValueError):
        Manifest.model_validate(_with_health(m, [bad], expected))
    with pytest.raises(ValueError):
        Manifest.model_validate(_with_health(m, m["health"]["inputs"], bad))
    with pytest.raises(ValueError, match="not listed"):
        Manifest.model_validate(_with_health(m, ["golden/unlisted.png"], expected))


def test_hub_refuses_at_publish_when_the_health_check_reads_outside_the_bundle(
    live_hub: LiveHub, admin: HubAdminClient, keys: Path, make_bundle: BundleMaker
) -> None:
    b = make_bundle(1, BOXES)
    m = json.loads((b / "manifest.json").read_text())
    raw = json.dumps(_with_health(m, ["../../etc/passwd"], m["health"]["expected"])).encode()
    admin.put_blob(raw)
    additions = {
        "digits/1/manifest.json": (
            hashlib.sha256(raw).hexdigest(),
            len(raw),
            {"bundle": "digits", "version": 1},
        )
    }
    for rel, entry in m["files"].items():
        admin.put_blob((b / rel).read_bytes())
        additions[f"digits/1/{rel}"] = (entry["sha256"], entry["size"], None)
    signed = sign_targets(admin.current_targets(), additions, keys)
    with pytest.raises(HubError, match="not a valid manifest") as e:
        admin.post_targets(signed)
    assert e.value.http_status == 400


def test_cli_verify_exits_1_when_the_folder_holds_a_file_the_manifest_does_not_list(
    loop: Loop,
) -> None:
    b, targets = loop.signed_bundle()
    argv = ["bundle", "verify", str(b), "--root", str(loop.keys / "root.json")]
    argv += ["--targets", str(targets)]
    runner = CliRunner()
    assert runner.invoke(app, argv).exit_code == 0
    (b / "plugins").mkdir()
    (b / "plugins" / "evil.py").write_text("import os\n")
    bad = runner.invoke(app, argv)
    assert bad.exit_code == 1
    lines = [ln for ln in bad.output.splitlines() if ln]
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "does not list: plugins/evil.py" in lines[0]


def test_oversized_yaml_and_json_are_refused_before_parsing_when_they_exceed_the_caps(
    make_bundle: BundleMaker, tmp_path: Path
) -> None:
    flow = b"[" + b"1," * (2 << 20) + b"1]"  # a 4 MiB YAML flow list
    with pytest.raises(PipelineError, match="larger than"):
        load_pipeline_spec(flow)
    b = make_bundle(1, BOXES)
    (b / "pipeline.yaml").write_bytes(flow)
    with pytest.raises(BundleError, match="larger than"):
        load_bundle(b, verify=False)
    (b / "manifest.json").write_bytes(b'{"x": "' + b"a" * (2 << 20) + b'"}')
    with pytest.raises(BundleError, match="larger than"):
        read_manifest(b)
    cfg = tmp_path / "device.yaml"
    cfg.write_bytes(flow)
    with pytest.raises(ConfigError, match="larger than"):
        load_config(cfg)


@pytest.mark.parametrize("damage", ["missing", "changed"])
def test_replay_job_refuses_a_candidate_when_a_listed_file_is_missing_or_changed(
    make_bundle: BundleMaker, damage: str
) -> None:
    # Checked before anything is sent: the address below answers nothing, so a request would
    # raise HubUnavailable (a missing file used to escape as a FileNotFoundError traceback).
    b = make_bundle(1, BOXES)
    rel = sorted(read_manifest(b).files)[-1]
    if damage == "missing":
        (b / rel).unlink()
    else:
        (b / rel).write_bytes((b / rel).read_bytes() + b"x")
    client = HubAdminClient("http://127.0.0.1:9", "token", connect_timeout=1.0)
    with pytest.raises(BundleError, match=rel):
        client.start_replay_job(b, baseline=1)
