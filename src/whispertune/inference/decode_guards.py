"""Generation guards: a repetition guard with temperature fallback, and a token limit set by the audio's length.

Repetition: an output loops when its UTF-8 text compresses by zlib more than `COMPRESSION_RATIO_LIMIT` (2.4,
the test openai/whisper's `transcribe` rejects a decode with) or when one run of 1-4 words repeats
`REPEAT_LIMIT` times in a row ("बाभी बाभी बाभी बाभी"): short loops cut by the token limit compress too little
to cross 2.4. Only the looping items of a batch are decoded again, by sampling at the rising
`FALLBACK_TEMPERATURES` (openai/whisper's schedule without its 0.0, which is the greedy decode already made);
the first decode that does not loop is kept, else the least repetitive one (lowest compression ratio).
Sampling is seeded per clip (`SeededSampling`), so a run is reproducible and a clip's fallback does not depend
on which clips share its batch; each clip's token limit is its own too. The encoder runs once per batch: its
outputs serve the greedy decode and every fallback (`reusable_encoding`; on an H200 with random large-v2 weights,
where every clip loops, that and the hashed sampling noise halved the guard's time, benchmarks/NOTES.md).

Token limit: Whisper decodes until its end token or `max_new_tokens`; a looping decode runs to the limit,
so the limit decides how long a loop costs. `token_limit` bounds it by the audio's length:
`TOKEN_SLACK + TOKENS_PER_SECOND x seconds`, capped at `max_new_tokens`. 30 tokens/s is 1.5x the densest
speech measured (synthesized Marathi: 19.4 label tokens/s at most over the 70 test clips, median 14;
English: 4.7).
"""

from __future__ import annotations

import math
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from transformers import LogitsProcessor, LogitsProcessorList, SuppressTokensLogitsProcessor

from ..model.parts import base_model, encoder, input_dtype
from .generation import Generated, Loaded, generate_batch

COMPRESSION_RATIO_LIMIT = 2.4
REPEAT_LIMIT = 4  # a run of words repeated this many times in a row is a loop
MAX_REPEAT_WORDS = 4  # the longest run of words the repeat rule looks for
FALLBACK_TEMPERATURES = (0.2, 0.4, 0.6, 0.8, 1.0)
TOKENS_PER_SECOND = 30.0
TOKEN_SLACK = 16


def compression_ratio(text: str) -> float:
    """UTF-8 length over zlib-compressed length (what openai/whisper's transcribe computes); 0 for ''."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def longest_repeat(words: Sequence[str], max_n: int = MAX_REPEAT_WORDS) -> int:
    """The most times any run of 1..`max_n` words repeats back to back in `words` (1: no repeat)."""
    best = 1 if words else 0
    for n in range(1, max_n + 1):
        for start in range(len(words) - 2 * n + 1):
            count = 1
            while start + (count + 1) * n <= len(words) and \
                    words[start + count * n : start + (count + 1) * n] == words[start : start + n]:
                count += 1
            best = max(best, count)
    return best


def is_looping(text: str) -> bool:
    """True when `text` compresses more than 2.4 or repeats a run of words 4 times in a row."""
    return compression_ratio(text) > COMPRESSION_RATIO_LIMIT or longest_repeat(text.split()) >= REPEAT_LIMIT


def token_limit(seconds: float | None, max_new_tokens: int) -> int:
    """New tokens allowed for `seconds` of audio (unknown length: `max_new_tokens`)."""
    if seconds is None:
        return max_new_tokens
    return max(1, min(max_new_tokens, TOKEN_SLACK + math.ceil(TOKENS_PER_SECOND * max(seconds, 0.0))))


def clip_key(features: torch.Tensor) -> int:
    """A number that names a clip by its content (its features' bytes), whatever batch it is in."""
    return zlib.crc32(np.ascontiguousarray(features.detach().float().cpu().numpy()).tobytes())


_M32 = 0xFFFFFFFF


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (xor-shift-multiply) of int64 tensors holding values in [0, 2**32); the multiplier
    is below 2**27, so no product leaves int64."""
    x = ((x ^ (x >> 16)) * 0x45D9F3B) & _M32
    x = ((x ^ (x >> 16)) * 0x45D9F3B) & _M32
    return x ^ (x >> 16)


class SeededSampling(LogitsProcessor):
    """Sampling at `temperature` that draws each clip's numbers from its own seed, so that a clip samples the
    same tokens in any batch (torch's sampler draws one stream for the whole batch). Gumbel-max: the greedy
    choice over logits / T + G, with G ~ Gumbel(0, 1), is a sample of softmax(logits / T). G comes from
    uniforms that hash (`seeds[row]`, step, token id): elementwise integer work, the same for a row in any
    batch, one pass for the whole batch (a torch.Generator per row cost ~8 kernel launches per clip and step,
    which made fallback steps of a 256-clip batch launch-bound). Used with do_sample=False."""

    def __init__(self, temperature: float, seeds: Sequence[int]):
        self.temperature = temperature
        folded = [s % 2**64 for s in seeds]  # any Python int; its low and high 32 bits both count
        low, high = (torch.tensor(part, dtype=torch.int64) for part in
                     ([s & _M32 for s in folded], [s >> 32 for s in folded]))
        self.keys = low ^ _mix32(high)

    def uniforms(self, step: int, vocab: int, device) -> torch.Tensor:
        """(rows, vocab) floats in (0, 1), a function of (seed, step, token id) only."""
        self.keys = self.keys.to(device)  # moved once; later steps find them there
        rows = _mix32(self.keys ^ int(_mix32(torch.tensor(step % 2**32))))[:, None]
        tokens = (torch.arange(vocab, device=device, dtype=torch.int64) * 0x9E3779B1) & _M32
        bits = _mix32(_mix32(rows ^ tokens)) >> 8  # 24 bits: exact in float32
        return (bits.float() + 0.5) / 2**24

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        u = self.uniforms(input_ids.shape[1], scores.shape[1], scores.device)
        return scores.float() / self.temperature - torch.log(-torch.log(u))


def reusable_encoding(loaded: Loaded, features, options: dict | None) -> bool:
    """Whether the guard may run the encoder once and hand its outputs to every decode of the batch: 30-second
    features without timestamps on a float base (a quantized base's autocast would see a cast in between)."""
    from ..model.bnb import is_quantized

    shape = tuple(getattr(features, "shape", ()))
    return (len(shape) == 3 and shape[-1] == 3000 and not (options or {}).get("return_timestamps")
            and not is_quantized(base_model(loaded.model)))


def encoder_outputs(loaded: Loaded, features) -> torch.Tensor:
    """The encoder's last hidden states for (B, mel, 3000) features: what `generate` computes from them itself
    (the batch-invariant mode's grouped encoder included), so decoding either gives the same tokens."""
    device = torch.device(loaded.info.get("device", "cpu"))
    feats = torch.as_tensor(features).to(device=device, dtype=input_dtype(loaded.model))
    with torch.inference_mode():
        return encoder(loaded.model)(feats).last_hidden_state


@dataclass
class GuardedBatch:
    """A batch's outputs after the guard, and what the guard saw: `looped` is the greedy decode's verdict,
    `still_looping` the kept decode's; `temperatures[i]` is the temperature of the kept decode (0.0: greedy)."""

    generated: Generated
    looped: list[bool] = field(default_factory=list)
    still_looping: list[bool] = field(default_factory=list)
    temperatures: list[float] = field(default_factory=list)
    redecoded: int = 0  # fallback decodes run (items x temperatures)
    fallback_seconds: float = 0.0  # wall time of those decodes


def guarded_generate(
    loaded: Loaded,
    features: np.ndarray | torch.Tensor,
    *,
    encoded: bool = False,
    seconds: Sequence[float] | None = None,
    max_new_tokens: int = 255,
    num_beams: int = 1,
    autocast: bool = True,
    guard: bool = True,
    seed: int = 0,
    options: dict | None = None,
    names: Sequence[str] | None = None,
) -> GuardedBatch:
    """`generate_batch` with each clip's token limit (`seconds`, when known) and, with `guard`, the repetition
    guard. `guard=False` still reports which outputs loop. `encoded`: `features` are
    encoder outputs (see `generate_batch`). `names`: the clips' ids, which seed their fallback sampling (else
    their features' checksum: then features and cached encoder outputs of one clip sample differently). `options`
    go to every generate call (prompt, timestamps, sampling;
    the fallback's own temperature replaces a sampled first decode's)."""
    # each clip its own limit (the batch decodes to the largest): an output does not depend on its batch
    limits = [token_limit(s, max_new_tokens) for s in seconds] if seconds else None
    limit = max(limits) if limits else max_new_tokens
    given = features  # what names a clip when `names` is None
    if guard and not encoded and reusable_encoding(loaded, features, options):
        features, encoded = encoder_outputs(loaded, features), True  # once for the greedy and every fallback decode
    out = generate_batch(loaded, features, encoded=encoded, max_new_tokens=limit, num_beams=num_beams,
                         autocast=autocast, options=options, limits=limits)
    looped = [is_looping(t) for t in out.texts]
    result = GuardedBatch(out, looped, list(looped), [0.0] * len(looped))
    if not guard or not any(looped):
        return result
    feats = torch.as_tensor(features)
    ratios = {i: compression_ratio(out.texts[i]) for i, bad in enumerate(looped) if bad}
    keys = {i: zlib.crc32(names[i].encode()) if names else clip_key(torch.as_tensor(given[i]))
            for i, bad in enumerate(looped) if bad}
    plain = {k: v for k, v in (options or {}).items() if k not in ("do_sample", "temperature")}
    # transformers' Whisper generate reads a pair of timestamp tokens in an output as a segment's end and decodes the
    # rest of the window again for those clips only, in a smaller batch, whose rows then no longer match the
    # sampler's seeds (random weights did this on an H200). Without timestamps the fallback never picks one (the
    # first is the token after <|notimestamps|>); with them each clip's fallback decodes alone.
    timestamps = bool(plain.get("return_timestamps"))
    no_timestamps = getattr(loaded.model.generation_config, "no_timestamps_token_id", None)
    masks = [] if timestamps or no_timestamps is None else [SuppressTokensLogitsProcessor(
        list(range(no_timestamps + 1, loaded.model.config.vocab_size)), device=str(feats.device))]
    start = time.perf_counter()
    for attempt, temperature in enumerate(FALLBACK_TEMPERATURES):
        pending = [i for i, bad in enumerate(result.still_looping) if bad]
        if not pending:
            break
        for group in [[i] for i in pending] if timestamps else [pending]:
            sampler = SeededSampling(temperature, [keys[i] * 1_000_003 + seed * 101 + attempt for i in group])
            processors = LogitsProcessorList([*masks, sampler])
            again = generate_batch(loaded, feats[group], encoded=encoded, max_new_tokens=limit, num_beams=1,
                                   autocast=autocast, options={**plain, "do_sample": False, "logits_processor": processors},
                                   limits=[limits[i] for i in group] if limits else None)
            result.redecoded += len(group)
            out.new_tokens += again.new_tokens
            for slot, i in enumerate(group):
                text, ratio = again.texts[slot], compression_ratio(again.texts[slot])
                loops = is_looping(text)
                if loops and ratio >= ratios[i]:
                    continue  # no better than what is kept
                out.texts[i], out.sequences[i], ratios[i] = text, again.sequences[slot], ratio
                if out.segments is not None and again.segments is not None:
                    out.segments[i] = again.segments[slot]
                result.still_looping[i], result.temperatures[i] = loops, temperature
    result.fallback_seconds = time.perf_counter() - start  # the texts are on the host: the GPU work is done
    return result
