"""The local embedding model equals the reference implementation (sentence-transformers)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from agentmesh.agents.embeddings.local import DIMENSION, LocalMiniLM

REFERENCE = json.loads((Path(__file__).parent / "data" / "minilm_reference.json").read_text())


@pytest.fixture(scope="module")
def model() -> LocalMiniLM:
    return LocalMiniLM(batch_size=4)


def test_matches_sentence_transformers(model):
    ours = model.embed(REFERENCE["sentences"])
    reference = np.array(REFERENCE["vectors"], dtype=np.float32)
    assert ours.shape == reference.shape == (len(REFERENCE["sentences"]), DIMENSION)
    cosines = (ours * reference).sum(1)  # both are unit vectors
    assert cosines.min() >= 0.999, cosines


def test_is_semantic_not_lexical(model):
    cat, feline, revenue = model.embed(
        ["A cat sits on the mat.", "A feline rests on a rug.", "Quarterly revenue grew 12%."]
    )
    assert float(cat @ feline) > float(cat @ revenue) + 0.3


def test_langchain_interface_and_batching(model):
    texts = [f"document number {i}" for i in range(9)]
    one_by_one = [model.embed_query(t) for t in texts]
    batched = model.embed_documents(texts)
    assert np.allclose(np.array(one_by_one), np.array(batched), atol=1e-5)
    assert model.embed_documents([]) == []
    assert abs(np.linalg.norm(batched[0]) - 1.0) < 1e-5
