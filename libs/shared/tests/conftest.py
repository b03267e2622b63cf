from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from agentmesh.shared.events.outbox import Outbox
from agentmesh.shared.testing.backbone import backbone_schema, create_backbone_schema


@pytest.fixture(scope="session")
async def engine(database_url):
    engine = create_async_engine(database_url, pool_size=10)
    yield engine
    await engine.dispose()


@pytest.fixture
async def backbone(engine):
    """A fresh scratch schema with an outbox publishing as ``identity``."""
    metadata, tables, effects = backbone_schema("backbone_test")
    await create_backbone_schema(engine, metadata, tables)
    return tables, effects, Outbox(tables, source="identity")
