"""``leanloop dataset`` and ``leanloop ontology`` end to end: local check/convert, import and
export through a live hub on loopback, ontology changes on the hub and on a bundle source."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from hub.testing import LiveHub
from tests.trainer.datasets.dsgen import write_png
from trainer.datasets import read_dataset

runner = CliRunner()


def cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    from leanloop.cli import app

    r = runner.invoke(app, list(args), env=env)
    return r.exit_code, r.stdout, r.stderr


def folder_set(root: Path) -> Path:
    for cls, n in (("cat", 2), ("dog", 1)):
        for k in range(n):
            write_png(root / cls / f"{k}.png", 12, 9, seed=k)
    return root


def test_check_lists_every_problem_then_one_error_line_when_the_dataset_is_bad(
    tmp_path: Path,
) -> None:
    root = folder_set(tmp_path / "d")
    (root / "cat" / "broken.png").write_bytes(b"nope")
    (root / "stray.jpg").write_bytes(b"x")
    code, out, err = cli("dataset", "check", "folder", str(root))
    assert code == 2 and out == ""
    lines = err.splitlines()
    assert lines[0].startswith("  cat/broken.png: image 'cat/broken.png': image does not decode")
    assert lines[1] == "  stray.jpg: a file outside any class folder"
    assert lines[2].startswith("error: ") and "2 problems, nothing imported" in lines[2]
    assert len(lines) == 3


def test_convert_then_check_when_the_dataset_is_good(tmp_path: Path) -> None:
    root = folder_set(tmp_path / "d")
    code, out, err = cli(
        "dataset", "convert", "folder", str(root), "--to", "coco", "--out", str(tmp_path / "c")
    )
    assert code == 0, err
    code, out, _ = cli("dataset", "check", "coco", str(tmp_path / "c"), "--json")
    assert code == 0 and json.loads(out)["counts"] == {"cat": 2, "dog": 1}
    code, _, err = cli("dataset", "convert", "coco", str(tmp_path / "c"), "--to", "yolo",
                       "--out", str(tmp_path / "y"))  # fmt: skip
    assert code == 2 and err.startswith("error: yolo: YOLO txt holds boxes")


def test_import_and_export_through_the_hub_when_it_runs(live_hub: LiveHub, tmp_path: Path) -> None:
    env = {"LEANLOOP_ADMIN_TOKEN": live_hub.admin_token}
    root = folder_set(tmp_path / "d")
    hub = ["--hub", live_hub.url]
    code, out, err = cli("dataset", "import", "folder", str(root), "--name", "pets", *hub, env=env)
    assert code == 0, err
    assert out.startswith("pets v1: 3 images")
    out_dir = tmp_path / "ls"
    code, out, err = cli(
        "dataset", "export", "labelstudio", str(out_dir), "--name", "pets", *hub, env=env
    )
    assert code == 0, err
    assert read_dataset("labelstudio", out_dir).content() == read_dataset("folder", root).content()
    code, out, err = cli("dataset", "list", *hub, "--json", env=env)
    assert [r["version"] for r in json.loads(out)] == [1]
    code, out, err = cli("dataset", "export", "coco", str(tmp_path / "x"), "--name", "nope",
                         *hub, env=env)  # fmt: skip
    assert code == 1 and err.startswith("error: no dataset 'nope'")
    # Ontology on the hub: create, change, show, weakness.
    code, out, err = cli("ontology", "create", "pets", "cat", "dog", *hub, env=env)
    assert code == 0 and out.strip() == "pets v1: cat, dog", err
    code, out, err = cli("ontology", "change", "pets", "merge cat+dog=animal", "create bird",
                         *hub, env=env)  # fmt: skip
    assert code == 0, err
    assert out.splitlines()[0] == "pets v2: animal, bird"
    code, out, err = cli("ontology", "weakness", "pets", *hub, "--json", env=env)
    assert code == 0 and set(json.loads(out)["classes"]) == {"animal", "bird"}
    code, out, err = cli("ontology", "weakness", "pets", *hub, env=env)
    assert code == 0 and "animal" in out and "corrected from" in out, err
    # A retrained bundle source (its model's class order) gets the hub's version and changes.
    src = tmp_path / "src"
    src.mkdir()
    (src / "ontology.yaml").write_text("id: pets\nversion: 1\nclasses: [bird, animal]\n")
    code, out, err = cli("ontology", "stamp", str(src), *hub, env=env)
    assert code == 0, err
    stamped = yaml.safe_load((src / "ontology.yaml").read_text())
    assert stamped["version"] == 2 and stamped["previous_version"] == 1
    assert stamped["classes"] == ["bird", "animal"]
    assert stamped["mapping_from_previous"] == {"cat": "animal", "dog": "animal"}
    assert [c["op"] for c in stamped["changes"]] == ["merge", "create"]
    (src / "ontology.yaml").write_text("id: pets\nversion: 1\nclasses: [fish]\n")
    code, out, err = cli("ontology", "stamp", str(src), *hub, env=env)
    assert code == 2 and "are those of no version of ontology 'pets'" in err
    code, out, err = cli("ontology", "change", "pets", "explode cat", *hub, env=env)
    assert code == 2 and "cannot read change 'explode cat'" in err


def test_ontology_change_writes_the_next_version_when_given_a_bundle_source(
    tmp_path: Path,
) -> None:
    (tmp_path / "ontology.yaml").write_text("id: cars\nversion: 3\nclasses: [car, bus, bike]\n")
    code, _, err = cli(
        "ontology", "change", "cars", "--source", str(tmp_path),
        "split car=truck|sedan if aspect>=1.5", "rename bus=coach", "delete bike",
    )  # fmt: skip
    assert code == 0, err
    data = yaml.safe_load((tmp_path / "ontology.yaml").read_text())
    assert data["version"] == 4 and data["previous_version"] == 3
    assert data["classes"] == ["truck", "sedan", "coach"]
    assert data["mapping_from_previous"] == {"bus": "coach"}
    assert data["changes"][0]["rule"] == {
        "by": "aspect", "threshold": 1.5, "above": "truck", "below": "sedan"
    }  # fmt: skip
    code, _, err = cli("ontology", "change", "cars", "--source", str(tmp_path), "delete zebra")
    assert code == 2 and "no class 'zebra'" in err
    # A retrained source (classes of version 4, in the model's order) stamped from a history.
    retrained = tmp_path / "retrained"
    retrained.mkdir()
    (retrained / "ontology.yaml").write_text(
        "id: cars\nversion: 1\nclasses: [coach, sedan, truck]\n"
    )
    hist = tmp_path / "history.yaml"
    hist.write_text(yaml.safe_dump([{"version": 3, "classes": ["car", "bus", "bike"]}, data]))
    code, _, err = cli("ontology", "stamp", str(retrained), "--history", str(hist))
    assert code == 0, err
    stamped = yaml.safe_load((retrained / "ontology.yaml").read_text())
    assert stamped["version"] == 4 and stamped["changes"] == data["changes"]
    assert stamped["classes"] == ["coach", "sedan", "truck"]


def test_merge_refuses_mixed_ontology_versions_until_the_history_is_given(
    tmp_path: Path,
) -> None:
    from trainer.datasets import write_dataset
    from trainer.datasets.model import Dataset, Item

    def one(version: int, classes: list[str], label: str, name: str) -> Path:
        src = write_png(tmp_path / "img" / f"{name}.png", 8, 8)
        ds = Dataset(
            task="classification", classes=classes, ontology_id="pets",
            ontology_version=version,
            items=[Item(path=f"{name}.png", width=8, height=8, label=label, source=src)],
        )  # fmt: skip
        write_dataset("coco", ds, tmp_path / name)
        return tmp_path / name

    old = one(1, ["cat", "dog"], "cat", "old")
    new = one(2, ["animal"], "animal", "new")
    args = ["dataset", "merge", f"coco:{old}", f"coco:{new}", "--to", "native"]
    code, _, err = cli(*args, "--out", str(tmp_path / "m1"))
    assert code == 2 and "mix versions 1, 2 of ontology 'pets' and no mapping" in err
    hist = tmp_path / "history.yaml"
    hist.write_text(
        "- {version: 1, classes: [cat, dog]}\n"
        "- {version: 2, classes: [animal], changes: [{op: merge, sources: [cat, dog], "
        "into: animal}]}\n"
    )
    code, _, err = cli(*args, "--out", str(tmp_path / "m2"), "--history", str(hist))
    assert code == 0, err
    merged = read_dataset("native", tmp_path / "m2")
    assert merged.ontology_version == 2 and [i.label for i in merged.items] == ["animal"] * 2
