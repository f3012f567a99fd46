"""Training stage: LoRA fine-tuning with Seq2SeqTrainer (`trainer.train`), adapter-only atomic
checkpoints and resume, the non-finite loss guard, speed presets and their model changes, the cached
frozen encoder, log callbacks and loss plots.
"""
