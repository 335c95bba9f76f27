"""Ontology versions and the explicit changes between them (shared by the hub, the CLI and the
device; pure, no I/O).

The seed of the loop: classes get merged, split or created as the people in the loop learn what
the camera really sees. A new ontology version is the previous class list plus an ordered list
of :data:`Change` s — ``create``, ``rename``, ``merge`` (A + B → C), ``split`` (C → A | B, with an
optional :class:`SplitRule` deciding by box geometry) and ``delete``. :func:`apply_changes` turns
(previous classes, changes) into the new class list and a :class:`Mapping` that says, for each
old class, what a label of it becomes:

- a single new class (unchanged, renamed or merged): labels are **converted**;
- a split with a rule: a label *with a box* is converted by the rule; without a box (a whole-image
  class) it needs review;
- a split without a rule: it **needs review** (a human must pick a part);
- deleted: the label is **dropped**.

:meth:`Mapping.convert` answers one label; the hub (samples, annotations, feedback, the queue)
and the device (:func:`runtime.store.remap.remap_store`) remap their stored data with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, model_validator

from runtime.errors import LeanloopError

__all__ = [
    "Chain",
    "Change",
    "Conversion",
    "Create",
    "Delete",
    "LabelMapping",
    "Mapping",
    "Merge",
    "OntologyChangeError",
    "Rename",
    "Split",
    "SplitRule",
    "apply_changes",
    "mapping_between",
    "old_label_fate",
]


class OntologyChangeError(LeanloopError):
    """A change does not apply to the class list (unknown class, name taken, ...)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SplitRule(_Strict):
    """Chooses a part of a split class from a box's geometry: ``above`` when the measure is at
    least ``threshold``, else ``below``."""

    by: Literal["aspect", "area", "width", "height"] = Field(
        description="aspect: width/height; area: width*height in pixels; width, height in pixels"
    )
    threshold: float = Field(gt=0)
    above: str
    below: str

    def choose(self, box: Sequence[float]) -> str:
        w, h = float(box[2]) - float(box[0]), float(box[3]) - float(box[1])
        value = {
            "aspect": w / h if h > 0 else float("inf"),
            "area": w * h,
            "width": w,
            "height": h,
        }[self.by]
        return self.above if value >= self.threshold else self.below


class Create(_Strict):
    """A new class (nothing old maps to it)."""

    op: Literal["create"]
    name: str = Field(min_length=1, max_length=200)


class Rename(_Strict):
    op: Literal["rename"]
    old: str
    new: str = Field(min_length=1, max_length=200)


class Merge(_Strict):
    """A + B (+ ...) → ``into`` (a new name, or one of the sources)."""

    op: Literal["merge"]
    sources: list[str] = Field(min_length=2)
    into: str = Field(min_length=1, max_length=200)


class Split(_Strict):
    """``source`` → one of ``into`` (the source's name may be one of the parts)."""

    op: Literal["split"]
    source: str
    into: list[str] = Field(min_length=2)
    rule: SplitRule | None = None

    @model_validator(mode="after")
    def _rule_names_parts(self) -> Split:
        if self.rule is not None and not {self.rule.above, self.rule.below} <= set(self.into):
            raise ValueError("the rule's above/below must be among the split's parts")
        return self


class Delete(_Strict):
    op: Literal["delete"]
    name: str


Change = Annotated[Create | Rename | Merge | Split | Delete, Field(discriminator="op")]

# What an old class becomes: ("to", [name]) | ("split", [parts], rule) | ("deleted", [])
_Target = tuple[str, tuple[str, ...], SplitRule | None]


@dataclass(frozen=True)
class Conversion:
    """What one old label becomes: ``label`` (converted), or why not (``review``/``dropped``)."""

    label: str | None
    status: Literal["same", "converted", "review", "dropped"]
    options: tuple[str, ...] = ()  # the parts to choose from when status is "review"

    @property
    def ok(self) -> bool:
        return self.status in ("same", "converted")


@dataclass(frozen=True)
class Mapping:
    """Old class -> target, for one step between two class lists."""

    old_classes: tuple[str, ...]
    new_classes: tuple[str, ...]
    targets: dict[str, _Target] = field(default_factory=dict)

    def convert(self, label: str, box: Sequence[float] | None = None) -> Conversion:
        """What ``label`` (an old class, optionally with its box [x1, y1, x2, y2]) becomes.

        A label that is not an old class is returned unchanged when it is a new class (data
        already in the new ontology), else dropped.
        """
        target = self.targets.get(label)
        if target is None:
            if label in self.new_classes:
                return Conversion(label, "same")
            return Conversion(None, "dropped")
        kind, names, rule = target
        if kind == "to":
            return Conversion(names[0], "same" if names[0] == label else "converted")
        if kind == "split":
            if rule is not None and box is not None and len(box) >= 4:
                return Conversion(rule.choose(box), "converted")
            return Conversion(None, "review", names)
        return Conversion(None, "dropped")

    def identity(self) -> bool:
        """True when every label stays what it is."""
        return all(k == "to" and n[0] == c for c, (k, n, _) in self.targets.items())

    def to_manifest_mapping(self) -> dict[str, str]:
        """The manifest's ``mapping_from_previous`` (old -> new for one-to-one targets that
        change the name)."""
        return {c: n[0] for c, (k, n, _) in self.targets.items() if k == "to" and n[0] != c}

    def describe(self, label: str) -> str:
        """A sentence for an operator: what became of old class ``label``."""
        target = self.targets.get(label)
        if target is None:
            return f"{label!r} is not a class of the previous ontology"
        kind, names, rule = target
        if kind == "to":
            return f"{label!r} is now {names[0]!r}"
        if kind == "split":
            how = "by a rule on its box" if rule else "a human must choose"
            return f"{label!r} was split into {', '.join(map(repr, names))} ({how})"
        return f"{label!r} was deleted"


class LabelMapping(Protocol):
    """What the remap code needs of a mapping (one :class:`Mapping` or a :class:`Chain`)."""

    @property
    def old_classes(self) -> tuple[str, ...]: ...

    @property
    def new_classes(self) -> tuple[str, ...]: ...

    def convert(self, label: str, box: Sequence[float] | None = None) -> Conversion: ...

    def describe(self, label: str) -> str: ...


@dataclass(frozen=True)
class Chain:
    """Several version steps in a row (data stored under v1, the ontology now at v3)."""

    steps: tuple[Mapping, ...]

    @property
    def old_classes(self) -> tuple[str, ...]:
        return self.steps[0].old_classes

    @property
    def new_classes(self) -> tuple[str, ...]:
        return self.steps[-1].new_classes

    def convert(self, label: str, box: Sequence[float] | None = None) -> Conversion:
        status: Literal["same", "converted"] = "same"
        current = label
        for step in self.steps:
            c = step.convert(current, box)
            if not c.ok or c.label is None:
                return c
            if c.status == "converted":
                status = "converted"
            current = c.label
        return Conversion(current, status)

    def describe(self, label: str) -> str:
        current = label
        for step in self.steps:
            c = step.convert(current)
            if not c.ok or c.label is None:
                return step.describe(current)
            current = c.label
        return f"{label!r} is now {current!r}"


def apply_changes(classes: Sequence[str], changes: Sequence[Change]) -> tuple[list[str], Mapping]:
    """The class list after ``changes`` and the mapping from ``classes`` to it.

    Changes apply in order; a later change sees the earlier ones' result (rename A→B then merge
    B+C→D maps A to D). Raises OntologyChangeError naming the change that does not apply.
    """
    current = list(classes)
    if len(set(current)) != len(current):
        raise OntologyChangeError("the previous class list names a class twice")
    # Each old class's fate, in terms of the *current* list.
    fate: dict[str, _Target] = {c: ("to", (c,), None) for c in current}

    def retarget(old: str, new: _Target) -> None:
        """Every old class that currently lands on ``old`` lands on ``new`` now."""
        for c, (kind, names, rule) in list(fate.items()):
            if kind == "to" and names[0] == old:
                fate[c] = new
            elif kind == "split" and old in names:
                if new[0] == "to":
                    parts = tuple(dict.fromkeys(new[1][0] if n == old else n for n in names))
                    fixed = None
                    if rule is not None and new[1][0] not in names:
                        fixed = rule.model_copy(
                            update={
                                k: new[1][0] for k in ("above", "below") if getattr(rule, k) == old
                            }
                        )
                    fate[c] = ("to", parts, None) if len(parts) == 1 else ("split", parts, fixed)
                else:  # a part of a split is deleted or split again: a human decides
                    fate[c] = ("split", names, None)

    for n, ch in enumerate(changes):
        where = f"change {n + 1} ({ch.op})"

        def need(name: str, cur: list[str] = current, at: str = where) -> None:
            if name not in cur:
                raise OntologyChangeError(f"{at}: no class {name!r} in {cur}")

        def free(
            name: str, allowed: Sequence[str] = (), cur: list[str] = current, at: str = where
        ) -> None:
            if name in cur and name not in allowed:
                raise OntologyChangeError(f"{at}: class {name!r} already exists")

        if isinstance(ch, Create):
            free(ch.name)
            current.append(ch.name)
        elif isinstance(ch, Rename):
            need(ch.old)
            free(ch.new)
            current[current.index(ch.old)] = ch.new
            retarget(ch.old, ("to", (ch.new,), None))
        elif isinstance(ch, Merge):
            for s in ch.sources:
                need(s)
            if len(set(ch.sources)) != len(ch.sources):
                raise OntologyChangeError(f"{where}: a source is named twice")
            free(ch.into, ch.sources)
            at = min(current.index(s) for s in ch.sources)
            for s in ch.sources:
                retarget(s, ("to", (ch.into,), None))
            current = [c for c in current if c not in ch.sources]
            current.insert(at, ch.into)
        elif isinstance(ch, Split):
            need(ch.source)
            if len(set(ch.into)) != len(ch.into):
                raise OntologyChangeError(f"{where}: a part is named twice")
            for p in ch.into:
                free(p, [ch.source])
            at = current.index(ch.source)
            retarget(ch.source, ("split", tuple(ch.into), ch.rule))
            current[at : at + 1] = ch.into
        else:
            need(ch.name)
            if len(current) == 1:
                raise OntologyChangeError(f"{where}: cannot delete the last class")
            retarget(ch.name, ("deleted", (), None))
            current.remove(ch.name)
    return current, Mapping(tuple(classes), tuple(current), fate)


def old_label_fate(
    label: str, changes: Sequence[Change], mapping_from_previous: dict[str, str] | None = None
) -> tuple[str | None, str]:
    """What a label of the *previous* version became, from the new version's changes (or its
    plain mapping): ``(new label, "")`` when it converts one to one, else ``(None, why)``."""
    if mapping_from_previous and label in mapping_from_previous:
        return mapping_from_previous[label], ""
    current = label
    touched = False
    for ch in changes:
        if isinstance(ch, Rename) and ch.old == current:
            current, touched = ch.new, True
        elif isinstance(ch, Merge) and current in ch.sources:
            current, touched = ch.into, True
        elif isinstance(ch, Split) and ch.source == current:
            parts = ", ".join(repr(p) for p in ch.into)
            return None, f"{label!r} was split into {parts}; choose one of them"
        elif isinstance(ch, Delete) and ch.name == current:
            return None, f"{label!r} was deleted"
    return (current, "") if touched else (None, f"{label!r} is not a class")


def mapping_between(
    old_classes: Sequence[str],
    new_classes: Sequence[str],
    mapping_from_previous: dict[str, str] | None = None,
    changes: Sequence[Change] = (),
) -> Mapping:
    """The mapping a device uses between its committed ontology and a new one.

    With ``changes`` (the new version's explicit changes) they are replayed on the old classes;
    if they do not give the classes of ``new_classes`` (the device skipped a version) they are
    not used.
    Otherwise ``mapping_from_previous`` (old -> new) plus same-name classes convert, and any
    other old class is dropped.
    """
    if changes:
        try:
            got, mapping = apply_changes(old_classes, changes)
            if set(got) == set(new_classes):  # the model may order its outputs its own way
                return Mapping(mapping.old_classes, tuple(new_classes), mapping.targets)
        except OntologyChangeError:
            pass
    explicit = dict(mapping_from_previous or {})
    targets: dict[str, _Target] = {}
    for c in old_classes:
        to = explicit.get(c, c)
        targets[c] = ("to", (to,), None) if to in new_classes else ("deleted", (), None)
    return Mapping(tuple(old_classes), tuple(new_classes), targets)
