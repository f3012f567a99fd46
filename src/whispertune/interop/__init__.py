"""Export stage: merge a LoRA adapter into its base, convert to CTranslate2 (faster-whisper) with a
parity check against the transformers model, and push any of them to the Hub.

`merge`: the adapter folded into an unquantized base; `ct2_export`: the CTranslate2 conversion;
`parity`: the transcription comparison that accepts or refuses it; `hub`: push with a model card.
"""
