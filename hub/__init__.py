"""The hub: the aiohttp app devices and the admin talk to, its storage, and admin-side signing.

Modules: :mod:`hub.app` (``create_app``), :mod:`hub.config` (``HubConfig``), :mod:`hub.storage`
(SQLite + blobs), :mod:`hub.repository` (online TUF roles), :mod:`hub.signing` (offline keys),
:mod:`hub.jobs` (training jobs), :mod:`hub.client` (admin client), :mod:`hub.publish` (publishing
and root pushes through it), :mod:`hub.cli` (commands).
Import them directly; this package imports nothing so ``import hub`` stays cheap.
"""

__all__: list[str] = []
