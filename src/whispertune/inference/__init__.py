"""Inference stage: a base (+ adapter) loaded for generation, batched generation, evaluation on a data
split, transcription of files of any length, subtitles, and the text normalization and WER/CER
metrics used by all of them (and by training's evaluation).
"""
