"""Session-wide real servers: a throwaway PostgreSQL cluster and an S3-compatible server.

The hub tests run on the embedded backend (SQLite + a blob folder) unless
``LEANLOOP_TEST_HUB=postgres`` asks for PostgreSQL + S3 (``hub_storage`` below); tests written
for both backends take the ``hub_backend`` parameter. Where a server cannot start, the tests that
need it skip with the reason.

Under pytest-xdist with ``--dist loadgroup`` (``make test``), :func:`pytest_collection_modifyitems`
groups the tests: see its doc.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from hub.storage import S3Config
from hub.testservers import PostgresCluster, S3Server, ServerUnavailable

BACKENDS = ("sqlite", "postgres")
# Under xdist, the groups of these folders go first (their tests start processes, servers and
# training runs; the many short unit tests behind them fill the workers' ends evenly). The
# shared training (`trained`) goes first of all, beside the integration tests rather than beside
# the other trainer tests: two torch trainings at once on 2 cores slow each other down.
HEAVY_FIRST = ("tests/integration/", "tests/trainer/", "tests/hil/", "tests/systemd/", "tests/hub/")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # Idle OpenMP threads sleep instead of spinning (as the hub's training jobs do): torch in one
    # worker must not burn the core the other worker's processes are waiting for. Set before
    # anything imports torch.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On an xdist worker of ``--dist loadgroup``: each test module is one group (a worker runs
    it whole, so module fixtures start once), except that every test of the shared trained
    networks (``trained``, tests/trainer/conftest.py) is one group, trained once; groups are
    ordered heaviest folders first (run with ``--no-loadscope-reorder`` to keep the order)."""
    if not getattr(config.option, "loadgroup", False):
        return
    for item in items:
        if not any(item.iter_markers("xdist_group")):
            trained = "trained" in getattr(item, "fixturenames", ())
            group = "trained" if trained else item.nodeid.split("::")[0]
            item.add_marker(pytest.mark.xdist_group(group))

    def rank(item: pytest.Item) -> int:
        if "trained" in getattr(item, "fixturenames", ()):
            return -1
        path = item.nodeid.split("::")[0]
        return next((i for i, d in enumerate(HEAVY_FIRST) if path.startswith(d)), len(HEAVY_FIRST))

    items.sort(key=rank)  # stable: the collection order within a rank


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    try:
        cluster = PostgresCluster().start()
    except ServerUnavailable as e:
        pytest.skip(f"PostgreSQL cannot run here: {e}")
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    try:
        server = S3Server().start()
    except ServerUnavailable as e:
        pytest.skip(f"the S3 server cannot run here: {e}")
    yield server
    server.stop()


def storage_fields(backend: str, request: pytest.FixtureRequest) -> dict[str, Any]:
    """HubConfig fields for a backend: nothing (embedded), or a fresh database and bucket."""
    if backend == "sqlite":
        return {}
    pg: PostgresCluster = request.getfixturevalue("pg_cluster")
    s3: S3Server = request.getfixturevalue("s3_server")
    return {
        "database_url": pg.new_database(),
        "s3": S3Config(
            bucket=s3.create_bucket(),
            endpoint_url=s3.url,
            region="us-east-1",
            access_key_id=s3.access_key_id,
            secret_access_key=s3.secret_access_key,
        ),
    }


@pytest.fixture
def hub_storage(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Storage fields of the hub config the hub fixtures build (see module doc)."""
    backend = os.environ.get("LEANLOOP_TEST_HUB", "sqlite")
    if backend not in BACKENDS:
        raise pytest.UsageError(f"LEANLOOP_TEST_HUB={backend!r}: expected one of {BACKENDS}")
    return storage_fields(backend, request)


@pytest.fixture(params=BACKENDS)
def hub_backend(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Storage fields for each backend in turn (tests that must pass on both)."""
    return storage_fields(request.param, request)


@pytest.fixture
def replica_storage(request: pytest.FixtureRequest) -> dict[str, Any]:
    """PostgreSQL + S3 storage fields (tests of several hub replicas)."""
    return storage_fields("postgres", request)
