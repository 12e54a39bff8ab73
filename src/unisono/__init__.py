"""unisono: one audio-language backbone, three modes (ASR, TTS, realtime)."""

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from unisono.model.unisono import Unisono


def __getattr__(name: str) -> Any:
    # torch and transformers load on first use, so that `import unisono` and the CLI stay fast
    if name == "Unisono":
        from unisono.model.unisono import Unisono

        return Unisono
    raise AttributeError(f"module 'unisono' has no attribute {name!r}")


__all__ = ["Unisono", "__version__"]
