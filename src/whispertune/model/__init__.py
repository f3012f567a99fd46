"""Model stage: load a Whisper base (full precision, int8 or nf4), its processor, prepare it for
k-bit training, add LoRA adapters, and count parameters / estimate memory without loading weights.

`loading`: the base and its processor; `bnb`: bitsandbytes probing, configuration and int8 input
casts; `fp8`: float8 frozen weights; `lora`: k-bit preparation and the adapters; `dry_run`: counts and
memory estimate from the config alone; `device`: the device and dtypes a run uses; `parts`: the base
model under the adapters, its encoder and the dtype inputs are cast to.
"""
