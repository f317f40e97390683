"""The store keeps only the last tick's latent exposures, and when each owner was last told."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from goalkeeper.state import LatentRecord, StateStore

pytest_plugins = ["tests.db"]  # the state_url fixture: SQLite and PostgreSQL

T0 = datetime(2026, 12, 1, 6, 0, tzinfo=UTC)


def latent(address: str, port: int = 27017, key: str = "alice@example.com") -> LatentRecord:
    return LatentRecord(
        address=address,
        port=port,
        protocol="tcp",
        recipient_key=key,
        server_id="srv-1",
        server_name="db-1",
        project_id="p-1",
        rules='[{"rule_id": "r-1"}]',
        seen_at=T0,
    )


async def test_each_commit_replaces_the_latent_exposures_and_upserts_when_owners_were_told(
    state_url: str,
) -> None:
    store = await StateStore.open(state_url)
    try:
        first = [latent("203.0.113.5"), latent("203.0.113.6", 9200)]
        async with store.committing(
            run_id="run-1", started_at=T0, upserts=[], latent=first,
            latent_told=["alice@example.com"],
        ):  # fmt: skip
            pass
        assert await store.load_latent() == first
        assert await store.latent_told() == {"alice@example.com": T0}

        later = T0 + timedelta(days=1)
        async with store.committing(
            run_id="run-2", started_at=later, upserts=[], latent=[latent("203.0.113.7")],
            latent_told=["alice@example.com", "bob@example.com"],
        ):  # fmt: skip
            pass
        assert [r.address for r in await store.load_latent()] == ["203.0.113.7"]
        told = {"alice@example.com": later, "bob@example.com": later}
        assert await store.latent_told() == told

        # None leaves them as they were (a commit that did not look for any).
        async with store.committing(run_id="run-3", started_at=later, upserts=[]):
            pass
        assert [r.address for r in await store.load_latent()] == ["203.0.113.7"]
        assert await store.latent_told() == told
    finally:
        await store.aclose()
