"""Where each architecture family keeps what the internals need: declared once, here.

A causal LM's decoder, its list of blocks, its final norm, its unembedding, each block's
attention output projection and the final logit soft cap are declared per family (keyed
by the config's `model_type`), then checked against the loaded module. Nothing outside
`perplex.engine` walks a model's modules: the lens, patching and the per-head lens get
an `Anatomy` and call it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch

from perplex.core.errors import PerplexError
from perplex.engine.unembed import Unembed


class AnatomyError(PerplexError):
    """This model's internals are not where its family declares them, or it has no family."""


@dataclass(frozen=True)
class Family:
    """The attribute paths of one architecture family, from the causal LM."""

    name: str
    model_types: tuple[str, ...]
    decoder: str  # the model without its head
    blocks: str  # relative to the decoder: the ModuleList of transformer blocks
    final_norm: str  # relative to the decoder
    head: str  # the unembedding, from the causal LM
    attn_out: str  # relative to one block: the attention output projection (heads → d)


_LLAMA_LIKE = dict(decoder="model", blocks="layers", final_norm="norm", head="lm_head",
                   attn_out="self_attn.o_proj")
FAMILIES = (
    Family("Llama (SmolLM)", ("llama",), **_LLAMA_LIKE),
    Family("Mistral", ("mistral", "mixtral"), **_LLAMA_LIKE),
    Family("Qwen2", ("qwen2", "qwen3"), **_LLAMA_LIKE),
    Family("Gemma", ("gemma",), **_LLAMA_LIKE),
    Family("Gemma 2", ("gemma2",), **_LLAMA_LIKE),
    Family("Gemma 3 (text)", ("gemma3_text",), **_LLAMA_LIKE),
    Family("Phi-3", ("phi3",), **_LLAMA_LIKE),
    Family("OLMo 2", ("olmo2",), **_LLAMA_LIKE),
    Family("GPT-2", ("gpt2",), decoder="transformer", blocks="h", final_norm="ln_f",
           head="lm_head", attn_out="attn.c_proj"),
    Family("GPT-NeoX (Pythia)", ("gpt_neox",), decoder="gpt_neox", blocks="layers",
           final_norm="final_layer_norm", head="embed_out", attn_out="attention.dense"),
)


def family_of(config) -> Family:
    """The declared family of a model's config, or an `AnatomyError` naming those known."""
    model_type = str(getattr(config, "model_type", "") or "")
    for family in FAMILIES:
        if model_type in family.model_types:
            return family
    known = ", ".join(f"{f.name} ({'/'.join(f.model_types)})" for f in FAMILIES)
    raise AnatomyError(f"Perplex does not know where a {model_type or 'this'} model keeps "
                       f"its layers, final norm and unembedding, so it cannot look inside "
                       f"it. Known families: {known}.")


def _get_path(module, path: str):
    for name in path.split("."):
        module = getattr(module, name, None)
        if module is None:
            return None
    return module


@dataclass(frozen=True, eq=False)
class Anatomy:
    """A loaded causal LM's internals, at the places its family declares."""

    family: Family
    decoder: torch.nn.Module
    blocks: torch.nn.ModuleList
    final_norm: torch.nn.Module
    unembed: torch.nn.Module
    softcap: float | None
    hidden_size: int
    n_heads: int

    @property
    def n_blocks(self) -> int:
        """Number of transformer blocks."""
        return len(self.blocks)

    @property
    def layers_path(self) -> str:
        """The blocks' path from the decoder (what nnsight walks)."""
        return self.family.blocks

    @property
    def full_layers_path(self) -> str:
        """The blocks' path from the causal LM."""
        return f"{self.family.decoder}.{self.family.blocks}"

    @property
    def full_norm_path(self) -> str:
        """The final norm's path from the causal LM."""
        return f"{self.family.decoder}.{self.family.final_norm}"

    @property
    def head_path(self) -> str:
        """The unembedding's path from the causal LM."""
        return self.family.head

    @property
    def attn_out_path(self) -> str:
        """The attention output projection's path from a block."""
        return self.family.attn_out

    @cached_property
    def unembedding(self) -> Unembed:
        """The final norm, unembedding and soft cap: how a residual becomes logits."""
        return Unembed(self.final_norm, self.unembed, self.softcap)

    @property
    def norm_dtype(self) -> torch.dtype:
        """The dtype of the final norm's parameters (the model's dtype)."""
        return self.unembedding.norm_dtype

    @property
    def vocab_size(self) -> int:
        """Rows of the unembedding."""
        return int(self.unembed.weight.shape[0])

    def attn_out(self, block: int) -> torch.nn.Module:
        """Block `block`'s attention output projection."""
        return _get_path(self.blocks[block], self.family.attn_out)

    def logits(self, normed: torch.Tensor) -> torch.Tensor:
        """Float32 logits of already-normed states [..., d]: the head, then the soft cap."""
        return self.unembedding.logits(normed)

    def unembed_hidden(self, hidden: torch.Tensor) -> torch.Tensor:
        """Float32 logits of residual states [..., d]: final norm, unembedding, soft cap."""
        return self.unembedding(hidden)


def anatomy_of(model: torch.nn.Module) -> Anatomy:
    """The declared internals of a loaded causal LM, checked against its modules."""
    family = family_of(model.config)
    kind = type(model).__name__
    decoder = _get_path(model, family.decoder)
    blocks = _get_path(decoder, family.blocks) if decoder is not None else None
    norm = _get_path(decoder, family.final_norm) if decoder is not None else None
    head = _get_path(model, family.head)
    weight = getattr(head, "weight", None)
    if not (isinstance(weight, torch.Tensor) and weight.dim() == 2):
        raise AnatomyError(f"{kind} has no unembedding ({family.head}), so its hidden states "
                           "cannot be read as tokens. Choose a causal language model with a "
                           "language-model head.")
    missing = [name for name, found in (
        (family.decoder, isinstance(decoder, torch.nn.Module)),
        (f"{family.decoder}.{family.blocks}", isinstance(blocks, torch.nn.ModuleList)),
        (f"{family.decoder}.{family.final_norm}", isinstance(norm, torch.nn.Module)))
        if not found]
    if missing:
        raise AnatomyError(f"{kind} is declared as {family.name} but has no "
                           f"{', '.join(missing)}: its internals cannot be read.")
    hidden = int(getattr(model.config, "hidden_size", weight.shape[1]))
    if weight.shape[1] != hidden:
        raise AnatomyError(f"{kind}: the unembedding expects {weight.shape[1]} features but "
                           f"the hidden size is {hidden}.")
    cap = getattr(model.config, "final_logit_softcapping", None)
    heads = int(getattr(model.config, "num_attention_heads", 0)
                or getattr(model.config, "n_head", 0) or 0)
    return Anatomy(family=family, decoder=decoder, blocks=blocks, final_norm=norm,
                   unembed=head, softcap=float(cap) if cap else None, hidden_size=hidden,
                   n_heads=heads)


@dataclass(frozen=True)
class ModulePaths:
    """Where a family keeps its blocks, final norm and head, from a config alone.

    A trace of a model held elsewhere (NDIF) needs no more; the notebook code a page
    exports names the same paths for a local model.
    """

    layers_path: str
    norm_path: str
    head_path: str
    softcap: float | None
    vocab_size: int
    context: int


def module_paths(config) -> ModulePaths:
    """The declared paths of a model, from its config (a meta model with no weights will do)."""
    family = family_of(config)
    cap = getattr(config, "final_logit_softcapping", None)
    return ModulePaths(layers_path=f"{family.decoder}.{family.blocks}",
                       norm_path=f"{family.decoder}.{family.final_norm}",
                       head_path=family.head, softcap=float(cap) if cap else None,
                       vocab_size=int(config.vocab_size),
                       context=int(getattr(config, "max_position_embeddings", 0) or 0))
