"""The repetition guard's seeded sampling (inference/decode_guards.SeededSampling): per clip, not per batch, and a
sample of softmax(logits / T)."""

import torch

from whispertune.inference.decode_guards import SeededSampling


def test_a_row_gets_the_same_noise_in_any_batch_and_other_steps_other_noise():
    seeds = [7, 2**40 + 3, 123456789012345]
    batched = SeededSampling(0.5, seeds)
    scores = torch.randn(3, 50, generator=torch.Generator().manual_seed(0))
    ids = torch.zeros(3, 5, dtype=torch.long)
    out = batched(ids, scores)
    for row, seed in enumerate(seeds):
        alone = SeededSampling(0.5, [seed])(ids[row:row + 1], scores[row:row + 1])
        assert torch.equal(alone[0], out[row])
    later = batched(torch.zeros(3, 6, dtype=torch.long), scores)
    assert not torch.equal(later, out)  # step 6 draws new numbers
    assert not torch.equal(out[0] - scores[0] / 0.5, out[1] - scores[1] / 0.5)  # seeds differ: noise differs
    u = batched.uniforms(5, 50, "cpu")
    assert float(u.min()) > 0.0 and float(u.max()) < 1.0


def test_gumbel_max_samples_softmax_at_the_temperature():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    temperature = 0.7
    logits = (probs.log() * temperature)[None].repeat(4000, 1)  # softmax(logits / T) == probs
    picks = SeededSampling(temperature, range(4000))(torch.zeros(4000, 3, dtype=torch.long), logits).argmax(-1)
    share = torch.bincount(picks, minlength=4).float() / 4000
    # 4000 draws: the standard error of a share is at most 0.008; 4 of them stay within 0.03
    assert torch.allclose(share, probs, atol=0.03), share
