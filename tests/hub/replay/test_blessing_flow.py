"""The gate in front of releases, end to end: a real hub on loopback that requires blessings,
`leanloop replay --bless` on the hub's own history, `bundle publish` with and without --force."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from replaykit import CLASSES, grey_png, make_bundle, make_history, spread, truth_of
from typer.testing import CliRunner

from hub.client import HubAdminClient
from hub.config import HubConfig
from hub.errors import Conflict, ForbiddenError
from hub.testing import LiveHub
from leanloop.cli import app

BASELINE = (42, 127, 240)  # calls the cherries at 170-183 bananas
BETTER = (42, 127, 212)  # right everywhere


@pytest.fixture
def hub(tmp_path: Path, keys_dir: Path) -> Iterator[LiveHub]:
    cfg = HubConfig(
        data_dir=tmp_path / "hub", keys_dir=keys_dir, port=0, timestamp_check_interval_s=3600,
        require_blessing=True,
    )  # fmt: skip
    with LiveHub(cfg) as live:
        yield live


def seed_history(admin: HubAdminClient, levels: list[int]) -> None:
    """Labelled frames on the hub, as annotated production samples."""
    for k, level in enumerate(levels):
        meta = {
            "bundle": "fruit",
            "device_id": "cam-1",
            "created": 1_700_000_000 + 60 * k,
            "ontology_version": 1,
            "random_slice": k % 4 == 0,
            "prediction": {"size": [16, 16], "stages": {}},
        }
        admin.import_sample(meta, grey_png(level), [[0, 0, 16, 16, truth_of(level)]])


def cli(*args: str, token: str) -> tuple[int, str]:
    """Exit code, and stdout followed by stderr (with --json, stdout is the JSON alone)."""
    res = CliRunner().invoke(app, list(args), env={"LEANLOOP_ADMIN_TOKEN": token})
    if "--json" in args:
        json.loads(res.stdout)
    return res.exit_code, res.stdout + res.stderr


def test_better_everywhere_is_blessed_and_publishes_unblessed_is_refused(
    tmp_path: Path, hub: LiveHub, keys_dir: Path
) -> None:
    admin = HubAdminClient(hub.url, hub.admin_token)
    base = make_bundle(tmp_path, 1, BASELINE)
    cand = make_bundle(tmp_path, 2, BETTER)
    with pytest.raises(Conflict, match="fruit version 1 is not blessed"):
        admin.publish_bundle(base, keys_dir)
    code, out = cli("bundle", "publish", str(base), "--hub", hub.url, "--keys", str(keys_dir),
                    "--force", token=hub.admin_token)  # fmt: skip
    assert code == 2 and "--force needs --reason" in out
    why = "first version, no history yet"
    code, out = cli("bundle", "publish", str(base), "--hub", hub.url, "--keys", str(keys_dir),
                    "--force", "--reason", why, token=hub.admin_token)  # fmt: skip
    assert code == 0, out
    seed_history(admin, spread(0, 255, 60) + spread(171, 183, 30))

    work = str(tmp_path / "work")
    code, out = cli("replay", str(cand), "--baseline", "1", "--hub", hub.url, "--work", work,
                    "--bless", "--who", "alice", token=hub.admin_token)  # fmt: skip
    assert code == 0, out
    assert "blessed fruit v2" in out and "pass:" in out
    # the baseline came from the hub's signed targets, byte for byte
    fetched = tmp_path / "work" / "baseline-v1" / "manifest.json"
    assert fetched.read_bytes() == (base / "manifest.json").read_bytes()

    blessing = admin.blessings()[0]
    assert (blessing["bundle"], blessing["version"], blessing["who"]) == ("fruit", 2, "alice")
    assert blessing["baseline"]["version"] == 1
    admin.publish_bundle(cand, keys_dir)  # blessed: no force needed
    admin.rollout("fruit", 2)
    with pytest.raises(Conflict, match="not blessed"):
        admin.rollout("fruit", 1)
    admin.rollout("fruit", 1, force_reason="roll back by hand", who="bob")

    log = admin.audit_log()
    assert [(e["action"], e["version"], e["reason"]) for e in log] == [
        ("roll out unblessed (forced)", 1, "roll back by hand"),
        ("bless", 2, None),
        ("publish unblessed (forced)", 1, "first version, no history yet"),
    ]
    req = urllib.request.Request(
        f"{hub.url}/api/v1/admin/replay/reports/{blessing['report_digest']}.html",
        headers={"Authorization": f"Bearer {hub.admin_token}"},
    )
    with urllib.request.urlopen(req) as resp:
        page = resp.read().decode()
        assert resp.headers["Content-Type"].startswith("text/html")
    assert "PASS" in page and "data:image/png;base64," in page


def test_blocked_candidate_is_not_blessed_and_names_the_slice(tmp_path: Path, hub: LiveHub) -> None:
    history = tmp_path / "history"
    make_history(history, {"north": spread(0, 255, 80), "south": spread(75, 84, 40)})
    base = make_bundle(tmp_path, 1)
    worse = make_bundle(tmp_path, 2, (20, 127, 212))  # apples at 74-84 become bananas
    spec = tmp_path / "gate.yaml"
    spec.write_text("slices: {by: [cohort], min_size: 20}\nbootstrap: {resamples: 200}\n")
    code, out = cli("replay", str(worse), "--baseline", str(base), "--history", str(history),
                    "--spec", str(spec), "--work", str(tmp_path / "w"), "--json",
                    token=hub.admin_token)  # fmt: skip
    assert code == 1
    report = json.loads(out.splitlines()[0])
    assert "cohort=south top1_accuracy" in report["decision"]["blocked_by"]
    assert "cohort=north top1_accuracy" not in report["decision"]["blocked_by"]
    assert "cohort=south top1_accuracy regression" in out
    # a report that did not pass cannot be blessed
    code, out = cli("bless", str(tmp_path / "w" / "report"), "--hub", hub.url, "--who", "eve",
                    token=hub.admin_token)  # fmt: skip
    assert code == 1 and "did not pass" in out
    assert HubAdminClient(hub.url, hub.admin_token).blessings() == []
    # roles: a viewer reads reports but cannot bless; a named admin token signs as itself
    admin = HubAdminClient(hub.url, hub.admin_token)
    made = admin._json("POST", "/admin/tokens", json_body={"name": "vic", "role": "viewer"})
    viewer = HubAdminClient(hub.url, made["token"])
    digest = admin.post_report((tmp_path / "w" / "report" / "report.json").read_bytes())["digest"]
    assert json.loads(viewer._request("GET", f"/admin/replay/reports/{digest}.json"))["classes"]
    with pytest.raises(ForbiddenError):
        viewer.bless(digest, "vic")
    assert report["classes"] == CLASSES


def test_replay_cli_rejects_bad_input_with_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "gate.yaml"
    bad.write_text("metrics: {nonsense: {}}\n")
    code, out = cli("replay", str(tmp_path), "--baseline", "1", "--history", str(tmp_path),
                    "--spec", str(bad), token="t")  # fmt: skip
    assert code == 2 and out.startswith("error: ") and "unknown metric" in out
    code, out = cli("replay", str(tmp_path), "--baseline", "1", "--history", str(tmp_path),
                    token="t")  # fmt: skip
    assert code == 2 and "manifest.json" in out
    code, out = cli("metrics", "--hub", "http://127.0.0.1:9", "--window", "tomorrow", token="t")
    assert code == 2 and "--window 'tomorrow'" in out


def test_replay_as_a_hub_job_blesses_and_then_publishes(
    tmp_path: Path, hub: LiveHub, keys_dir: Path
) -> None:
    admin = HubAdminClient(hub.url, hub.admin_token)
    base = make_bundle(tmp_path, 1, BASELINE)
    cand = make_bundle(tmp_path, 2, BETTER)
    admin.publish_bundle(base, keys_dir, force_reason="first version")
    seed_history(admin, spread(0, 255, 40) + spread(171, 183, 30))
    code, out = cli("replay", str(cand), "--baseline", "1", "--hub", hub.url, "--on-hub",
                    "--bless", "--who", "carol", token=hub.admin_token)  # fmt: skip
    assert code == 0, out
    assert "pass:" in out and "blessed" in out
    assert admin.blessings()[0]["who"] == "carol"
    admin.publish_bundle(cand, keys_dir)
    with pytest.raises(Conflict, match="not blessed"):
        admin.publish_bundle(make_bundle(tmp_path, 3, BETTER), keys_dir)
