"""Blessings: the record that a bundle passed the replay gate, and the one check that needs it.

A blessing names the candidate bundle by digest (sha256 of its ``manifest.json``, which pins
every file), the baseline it was judged against, the digests of the gate spec and of the report,
when, and who. It is made only from a stored report whose decision is ``pass``
(:func:`blessing_from_report`).

:func:`check_release` is the single place that decides whether a bundle version may be
published (``POST /admin/targets``) or rolled out (``POST /admin/rollouts``): when the hub's
``require_blessing`` setting is on, an unblessed bundle is refused (409) unless the admin forces
it with a reason, and a forced release is written to the audit log with who and why.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from hub.errors import BadRequest, Conflict

__all__ = ["blessing_from_report", "check_release"]


def blessing_from_report(
    report: dict[str, Any], report_digest: str, who: str, now: float | None = None
) -> dict[str, Any]:
    """The blessing a passing report earns. Raises Conflict if the gate did not pass."""
    try:
        decision = report["decision"]["decision"]
        cand, base = report["candidate"], report["baseline"]
        blessing = {
            "candidate_digest": str(cand["digest"]),
            "bundle": str(cand["name"]),
            "version": int(cand["version"]),
            "baseline": {
                "bundle": str(base["name"]),
                "version": int(base["version"]),
                "digest": str(base["digest"]),
            },
            "spec_digest": str(report["spec_digest"]),
            "report_digest": report_digest,
            "who": who,
            "time": time.time() if now is None else now,
        }
    except (KeyError, TypeError, ValueError) as e:
        raise BadRequest(f"not a replay report: missing or bad {e}") from e
    if decision != "pass":
        summary = str(report["decision"].get("summary", decision))
        raise Conflict(f"the gate did not pass, nothing to bless: {summary}")
    return blessing


def check_release(
    db: Any,
    require_blessing: bool,
    releases: Sequence[tuple[str, int, str | None]],
    action: str,
    force_reason: str | None = None,
    who: str | None = None,
) -> None:
    """Allow publishing/rolling out ``(bundle, version, manifest digest or None)`` or raise.

    A digest, when known, must be the blessed one; without a digest any blessing of that
    version counts (a rollout of an already published version). Raises Conflict naming the
    first unblessed bundle, unless ``force_reason`` is given: then every unblessed release is
    written to the audit log and allowed. Raises BadRequest for a blank reason.
    """
    if force_reason is not None and not force_reason.strip():
        raise BadRequest("--force needs a --reason")
    unblessed = []
    for bundle, version, digest in releases:
        found = db.blessing(digest) if digest else db.blessed_version(bundle, version)
        if found is None or (found["bundle"], found["version"]) != (bundle, version):
            unblessed.append((bundle, version, digest))
    if not unblessed or not require_blessing:
        return
    if force_reason is None:
        bundle, version, _ = unblessed[0]
        raise Conflict(
            f"{bundle} version {version} is not blessed: replay it against the production "
            f"version and bless it (`leanloop replay ... --bless`), or {action} it with "
            "--force --reason"
        )
    for bundle, version, digest in unblessed:
        db.audit(f"{action} unblessed (forced)", bundle, version, who, force_reason,
                 {"digest": digest})  # fmt: skip
