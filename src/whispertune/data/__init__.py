"""Data stage: examples from any source -> decoded 16 kHz audio -> log-Mel features and label ids ->
padded batches, with every skipped example counted; plus the synthetic speech corpus builder.

`sources` -> `audio` -> `features` -> `collate`, `report` counting skips along the way; `synth`
(with `synth_engines` and `sentences`) builds a corpus in the layout `sources` reads.
"""
