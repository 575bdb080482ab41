"""Model specs and loading: the bundled default, a Hugging Face id, a local folder, a GGUF file.

A GGUF file takes tens of seconds to dequantise, so the first load converts it once into
a safetensors copy under `Settings.models_dir`; later loads read that copy in about a second.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import shutil
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from urllib.parse import urlparse

import torch

from perplex.core.errors import ModelLoadError
from perplex.core.records import Message
from perplex.core.settings import Settings, load_settings
from perplex.engine.anatomy import Anatomy, anatomy_of
from perplex.engine.local.layout import lay_out_for_decoding
from perplex.engine.spec import (  # noqa: F401 (the names loaders and tests use)
    BUNDLED,
    BUNDLED_GGUF,
    BUNDLED_NAME,
    BUNDLED_PACKAGE,
    DTYPES,
    ModelSpec,
    bundled_gguf_path,
)

log = logging.getLogger(__name__)

CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel")


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A model ready for inference, with the facts the sidebar shows."""

    spec: ModelSpec
    model: torch.nn.Module
    tokenizer: object
    load_seconds: float
    converted_now: bool = False  # True when this load wrote the safetensors copy
    facts: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        """The spec's label."""
        return self.spec.label

    @property
    def n_layers(self) -> int:
        """Number of transformer blocks."""
        return int(getattr(self.model.config, "num_hidden_layers", 0) or 0)

    @property
    def vocab_size(self) -> int:
        """Rows of the unembedding (may exceed the tokenizer's vocabulary)."""
        return int(self.model.get_output_embeddings().weight.shape[0])

    @property
    def device(self) -> torch.device:
        """Where the weights are (inputs go there)."""
        return self.model.device

    @property
    def n_params(self) -> int:
        """Parameter count, tied weights counted once."""
        return sum(p.numel() for p in self.model.parameters())

    @property
    def context_length(self) -> int:
        """The longest sequence the model was built for."""
        return int(getattr(self.model.config, "max_position_embeddings", 0) or 2048)

    @cached_property
    def anatomy(self) -> Anatomy:
        """The model's internals where its family declares them (read once)."""
        return anatomy_of(self.model)

    @cached_property
    def vocab_texts(self) -> list[str]:
        """Each token id's text on its own, computed once (alternatives use it)."""
        return self.tokenizer.batch_decode([[i] for i in range(self.vocab_size)])

    @cached_property
    def max_token_chars(self) -> int:
        """The most characters one token adds to a text (+1: a leading space joined on)."""
        return max(map(len, self.vocab_texts), default=1) + 1

    def overlong(self, messages: Sequence[Message]) -> str | None:
        """Why `messages` cannot fit the context window, known without tokenising them.

        Tokenising 19 MB takes 30 s; a text of more characters than the window's tokens
        can hold at `max_token_chars` each is refused at once instead. None: it may fit.
        """
        chars = sum(len(m.content) for m in messages)
        if chars <= self.context_length * self.max_token_chars:
            return None
        return (f"it has {chars:,} characters, more than {self.label} can read: it reads at "
                f"most {self.context_length:,} tokens (of at most "
                f"{self.max_token_chars - 1} characters each). Split it or shorten it.")

    @property
    def eos_ids(self) -> set[int]:
        """Token ids that end a response."""
        ids: set[int] = set()
        for source in (self.model.generation_config.eos_token_id, self.tokenizer.eos_token_id):
            if isinstance(source, int):
                ids.add(source)
            elif source:
                ids.update(source)
        return ids


def model_bytes(lm: LoadedModel) -> int:
    """Bytes held by a model's parameters and buffers (tied weights counted once)."""
    seen, total = set(), 0
    for tensor in [*lm.model.parameters(), *lm.model.buffers()]:
        if tensor.data_ptr() not in seen:
            seen.add(tensor.data_ptr())
            total += tensor.numel() * tensor.element_size()
    return total


def load_model(spec: ModelSpec, settings: Settings | None = None) -> LoadedModel:
    """Load a model and its tokenizer as the spec says; errors are `ModelLoadError`."""
    settings = settings or load_settings()
    if settings.hosted:
        refuse_unlisted(spec, settings)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    if spec.dtype not in DTYPES:
        raise ModelLoadError(f"Unknown dtype {spec.dtype!r}: choose one of {', '.join(DTYPES)}.")
    started = time.perf_counter()
    converted_now = False
    if spec.kind in ("bundled", "gguf"):
        gguf = bundled_gguf_path() if spec.kind == "bundled" else Path(spec.source).expanduser()
        folder, converted_now = converted_gguf_folder(gguf, settings.models_dir)
        model, tokenizer = _from_folder(folder, spec)
    elif spec.kind == "local":
        model, tokenizer = _from_folder(_checked_local_folder(spec.source), spec)
    else:
        model, tokenizer = _from_hub(spec)
    model.eval().requires_grad_(False)
    lay_out_for_decoding(model)
    loaded = LoadedModel(spec, model, tokenizer, time.perf_counter() - started, converted_now)
    log.info("loaded %s in %.1f s", spec.label, loaded.load_seconds)
    return loaded


def refuse_unlisted(spec: ModelSpec, settings: Settings) -> None:
    """On a hosted server, only the operator's models load; say so without touching the path.

    Allowed: the bundled model, the sources in `PERPLEX_ALLOWED_MODELS`, and folders inside
    the model cache Perplex writes itself (the offline fine-tuned and int8 copies). Nothing
    about the requested path is looked up, so a refusal tells nothing about what exists.
    """
    if spec.trust_remote_code and not settings.trust_remote_code:
        raise ModelLoadError("This server does not run a model's own code (trust_remote_code).")
    if spec.source in settings.model_allow_list:
        return
    cache = settings.models_dir.resolve()
    if Path(spec.source).expanduser().resolve().is_relative_to(cache):
        return
    allowed = ", ".join(settings.model_allow_list)
    raise ModelLoadError(f"This server loads only the models its operator allowed: {allowed}. "
                         "Ask them to add the one you need (PERPLEX_ALLOWED_MODELS).")


def converted_gguf_folder(gguf: Path, models_dir: Path) -> tuple[Path, bool]:
    """The safetensors copy of a GGUF file, written on first use; (folder, written now)."""
    if not gguf.is_file():
        raise ModelLoadError(f"No GGUF file at {gguf}. Check the path.")
    stat = gguf.stat()
    digest = hashlib.sha1(f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    folder = models_dir / f"{gguf.stem}-{digest.hexdigest()[:10]}"
    if (folder / "config.json").is_file() and (folder / "model.safetensors").is_file():
        return folder, False
    _convert_gguf(gguf, folder)
    return folder, True


def _convert_gguf(gguf: Path, folder: Path) -> None:
    """Dequantise a GGUF file once and save it as safetensors plus tokenizer files."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to safetensors (once)", gguf.name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        gguf_model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    except Exception as exc:  # gguf raises a variety of types for a damaged file
        raise ModelLoadError(
            f"Could not read {gguf.name} as a GGUF model ({type(exc).__name__}: {exc}). "
            "Check that the file is a complete GGUF export of a causal language model."
        ) from exc
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    # save_pretrained refuses GGUF-loaded models, so copy the weights into a plain one.
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(gguf_model.state_dict())
    partial = folder.with_name(folder.name + f".partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    plain.save_pretrained(partial, safe_serialization=True)
    tokenizer.save_pretrained(partial)
    (partial / "perplex-source.json").write_text(json.dumps({"gguf": str(gguf)}))
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(partial, folder)


def _checked_local_folder(source: str) -> Path:
    folder = Path(source).expanduser()
    if not folder.is_dir():
        raise ModelLoadError(f"No folder at {folder}. Give the path of a saved model folder.")
    if not (folder / "config.json").is_file():
        raise ModelLoadError(
            f"{folder} has no config.json, so it is not a saved Hugging Face model. "
            "Choose the folder that `save_pretrained` wrote.")
    return folder


def _from_folder(folder: Path, spec: ModelSpec) -> tuple[torch.nn.Module, object]:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    trust = spec.trust_remote_code
    try:
        config = AutoConfig.from_pretrained(folder, trust_remote_code=trust)
    except ValueError as exc:
        raise ModelLoadError(f"{folder}: {exc}") from exc
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    architectures = getattr(config, "architectures", None) or []
    causal = config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and (
        not architectures or any(a.endswith(CAUSAL_SUFFIXES) for a in architectures))
    if not causal and not trust:
        kind = ", ".join(architectures) or config.model_type
        raise ModelLoadError(
            f"{folder} holds a {kind} model, which is not a causal language model Perplex "
            "can run. Choose a decoder-only (causal LM) checkpoint.")
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust)
        model = AutoModelForCausalLM.from_pretrained(
            folder, dtype=DTYPES[spec.dtype], trust_remote_code=trust).to(spec.device)
    except pickle.UnpicklingError:
        raise ModelLoadError(
            f"{folder} holds pickled weights (pytorch_model.bin) with something other than "
            "plain tensors in them. Perplex reads pickled weights only as plain tensors, so "
            "nothing in the file was run. Use the model's safetensors files, or a copy "
            "converted to safetensors by its publisher.") from None
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelLoadError(f"Could not load the model in {folder}: "
                             f"{str(exc).strip().splitlines()[0][:300]}") from exc
    return model, tokenizer


def _from_hub(spec: ModelSpec) -> tuple[torch.nn.Module, object]:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    patterns = ["*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken"]
    try:
        folder = snapshot_download(spec.source, allow_patterns=patterns, local_files_only=True)
    except (LocalEntryNotFoundError, OSError, ValueError):
        if not hub_reachable():
            raise ModelLoadError(
                f"{spec.source!r} is not in the local Hugging Face cache and the Hub cannot be "
                "reached from this machine (offline). Connect to the network, or download the "
                "model elsewhere and give its local folder instead.") from None
        try:
            folder = snapshot_download(spec.source, allow_patterns=patterns)
        except (HfHubHTTPError, OSError, ValueError) as exc:
            raise ModelLoadError(
                f"Could not download {spec.source!r} from the Hugging Face Hub: {exc}. "
                "Check the model id (owner/name) and your access to it.") from exc
    return _from_folder(Path(folder), spec)


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face Hub answers a TCP connection (and offline mode is off)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes"}:
        return False
    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname or ""
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False
