"""One settings object, read from the environment (`PERPLEX_*`) over defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Settings:
    """Everything configurable about a Perplex process.

    Each field can be overridden by the environment variable `PERPLEX_<NAME>`.
    """

    home: Path = PROJECT_ROOT / "data"  # runtime files: database, converted models
    db_path: Path | None = None  # defaults to <home>/perplex.duckdb
    model_cache: Path | None = None  # defaults to <home>/models
    default_model: str = "bundled"
    device: str = "cpu"
    trust_remote_code: bool = False
    confident_threshold: float = 0.7  # p at or above: green
    uncertain_threshold: float = 0.3  # p below: red; between the two: yellow
    top_k_stored: int = 20
    threads: int = 0  # torch threads; 0 leaves torch's default
    model_memory: str = ""  # budget for loaded models, e.g. "8GiB" ("": none)
    hosted: bool = False  # a team server: every visitor signs in; models from an allow-list
    users: Path | None = None  # hosted: the users file (`python -m perplex.core.accounts`)
    allowed_models: str = ""  # hosted: comma-separated model sources besides the bundled one
    uploads_per_hour: int = 60  # hosted: per user (0: no limit)
    runs_at_once: int = 1  # hosted: generations or scorings in progress per user (0: no limit)
    batch_items: int = 1000  # hosted: items one batch may hold (0: no limit)
    operator_keys: bool = False  # hosted: visitors may use the operator's NDIF key

    @property
    def model_allow_list(self) -> tuple[str, ...]:
        """The model sources a hosted server may load: the bundled one and the operator's."""
        return ("bundled", *(m.strip() for m in self.allowed_models.split(",") if m.strip()))

    @property
    def database(self) -> Path:
        """The DuckDB file results are kept in."""
        return self.db_path or self.home / "perplex.duckdb"

    @property
    def models_dir(self) -> Path:
        """Where converted copies of models are cached."""
        return self.model_cache or self.home / "models"


def _parse(value: str, kind: type) -> object:
    if kind is bool:
        return value.strip().lower() in {"1", "true", "yes", "on"}
    if kind in (Path, Path | None):
        return Path(value).expanduser()
    if kind is int:
        return int(value)
    if kind is float:
        return float(value)
    return value


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    """Settings from the environment, falling back to the defaults above."""
    environ = os.environ if environ is None else environ
    overrides: dict[str, object] = {}
    types = {"home": Path, "db_path": Path, "model_cache": Path, "trust_remote_code": bool,
             "hosted": bool, "users": Path,
             "confident_threshold": float, "uncertain_threshold": float,
             "top_k_stored": int, "threads": int, "uploads_per_hour": int,
             "runs_at_once": int, "batch_items": int, "operator_keys": bool}
    for f in fields(Settings):
        raw = environ.get(f"PERPLEX_{f.name.upper()}")
        if raw is not None and raw != "":
            overrides[f.name] = _parse(raw, types.get(f.name, str))
    return Settings(**overrides)
