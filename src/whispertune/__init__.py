"""whispertune: fine-tune Whisper with LoRA on an 8-bit or 4-bit base, then evaluate and ship it."""

__version__ = "0.1.0"
