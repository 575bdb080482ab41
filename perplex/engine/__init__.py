"""Engines: one protocol (`Engine`) with capability flags, and the engines behind it.

Modes built from here on take an `Engine`, never a torch module: what an engine cannot do it
says through its `Capabilities` (pages disable the view and show the reason), and a call it
cannot serve raises `CapabilityError`.
"""

from perplex.engine.local.engine import LocalEngine
from perplex.engine.protocol import Capabilities, CapabilityError, Engine, ModelInfo
from perplex.engine.registry import ModelRegistry, RegistryFullError

__all__ = ["Capabilities", "CapabilityError", "Engine", "LocalEngine", "ModelInfo",
           "ModelRegistry", "RegistryFullError"]
