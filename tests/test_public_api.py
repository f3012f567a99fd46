"""The package root's public API: every advertised name resolves to its owner, lazily."""

from __future__ import annotations

import subprocess
import sys

import whispertune


def test_every_public_name_resolves_to_its_owner():
    from whispertune.inference.evaluate import evaluate
    from whispertune.training.trainer import train

    assert whispertune.train is train and whispertune.evaluate is evaluate
    for name in whispertune.__all__:
        assert getattr(whispertune, name) is not None, name


def test_import_stays_light():
    code = "import sys, whispertune; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
