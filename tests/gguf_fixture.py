"""A tiny random Llama model in GGUF, built by the tests (never downloaded), so the REAL
llama-cpp-python path -- GGUF loading, chat template, JSON-schema grammar, sampling -- runs
offline in seconds.

What it is: a 2-layer, 64-wide ``llama`` architecture with random weights and a GPT-2-style
byte-level BPE tokenizer (``tokenizer.ggml.model = "gpt2"``, pre-tokenizer ``llama-bpe`` as in
Llama 3). Its vocabulary holds all 256 bytes (so a grammar can make it spell any JSON), a few
hundred merges learned here from a small corpus (llama.cpp refuses a BPE vocabulary without
merges, and merges keep long prompts within the context), and Llama-3 special tokens
(``<|begin_of_text|>``, ``<|start_header_id|>``, ``<|end_header_id|>``, ``<|eot_id|>`` = EOS).
``tokenizer.chat_template`` is a minimal Llama-3-style Jinja template, so
``create_chat_completion`` formats messages through llama-cpp-python's Jinja2 path exactly as
it does for the real Llama 3.1 GGUF.

What it is not: a classifier. Its words are arbitrary; only the grammar makes them valid.

``bias`` ({text: logits}) makes chosen tokens more or less likely regardless of context, which
the tests use so free-form parts (string contents, optional whitespace, array length) end
quickly: the residual stream carries a large constant in dimension 0 (set in every token
embedding), so after the final RMS norm that dimension is ~sqrt(n_embd) for every position
and ``output.weight[:, 0]`` acts as a per-token logit bias. The other dimensions carry the
random, context-dependent part.

Pitfalls met (docs/contracts.md#llama): GGUFWriter records numpy shapes reversed (numpy
``(n_vocab, n_embd)`` is GGUF ``ne = [n_embd, n_vocab]``, which is what llama.cpp expects for
``token_embd``); a gpt2 tokenizer with no merges does not load; byte tokens are stored in the
GPT-2 ``bytes_to_unicode`` alphabet, not as raw bytes.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np

N_EMBD = 64
N_HEAD = 4
N_HEAD_KV = 2
N_FF = 128
N_LAYER = 2
CONTEXT_LENGTH = 8192
#: Strength of the constant residual component that carries the ``bias`` (see module docstring).
_BIAS_CARRIER = 8.0
#: Scale of the random (context-dependent) part of the output projection.
_OUTPUT_NOISE = 0.5

SPECIAL_TOKENS = ("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")
BOS = "<|begin_of_text|>"
EOS = "<|eot_id|>"

#: Minimal Llama-3-style template (the real 3.1 template adds tool-calling branches).
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

#: Llama 3's pre-tokenizer split, approximated with ``re`` (no \p classes): words with their
#: leading space, 1-3 digit runs, punctuation runs, whitespace.
_PRETOKENIZE = re.compile(r"""'(?:[sdmt]|ll|ve|re)| ?[A-Za-z\u00c0-\uffff]+| ?[0-9]{1,3}| ?[^\sA-Za-z0-9]+|\s+""")

_DEFAULT_CORPUS = (
    'A photo of a red leather handbag on a white background. {"classification": {"sexual": "SAFE", '
    '"violence": "SAFE", "hate": "SAFE", "disturbing": "SAFE", "drugs": "SAFE"}, "reasons": '
    '["product photo"], "confidence": 0.9} The image shows a woman wearing a blue dress, standing '
    "in front of a wall. Classify the caption. Answer with JSON only. BORDERLINE UNSAFE SAFE"
)


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map, used for byte-level BPE vocabularies."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def _encode(text: str, table: dict[int, str]) -> str:
    return "".join(table[b] for b in text.encode("utf-8"))


def learn_merges(corpus: str, n_merges: int) -> list[tuple[str, str]]:
    """Plain BPE training on the byte-level form of ``corpus``, within pre-tokenizer pieces."""
    table = bytes_to_unicode()
    words = Counter(_encode(piece, table) for piece in _PRETOKENIZE.findall(corpus))
    splits = {w: list(w) for w in words}
    merges: list[tuple[str, str]] = []
    for _ in range(n_merges):
        pairs: Counter[tuple[str, str]] = Counter()
        for w, count in words.items():
            parts = splits[w]
            for a, b in zip(parts, parts[1:]):
                pairs[(a, b)] += count
        if not pairs:
            break
        (a, b), _ = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))
        merges.append((a, b))
        for w in words:
            parts = splits[w]
            i, out = 0, []
            while i < len(parts):
                if i + 1 < len(parts) and parts[i] == a and parts[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(parts[i])
                    i += 1
            splits[w] = out
    return merges


def build_tiny_llama_gguf(
    path: str | Path,
    *,
    bias: dict[str, float] | None = None,
    corpus: str | None = None,
    n_merges: int = 2000,
    seed: int = 0,
    weight_scale: float = 0.5,
) -> Path:
    """Write a random llama GGUF (< 1 MB) to ``path`` and return the path.

    ``bias`` maps token *text* (a single byte such as ``'"'``, or a learned merge) to a logit
    offset applied at every position. ``corpus`` is the text the merges are learned from (pass
    the prompts the test will send, so they tokenize compactly). ``seed`` fixes the weights."""
    import gguf

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = bytes_to_unicode()

    tokens: list[str] = [table[b] for b in range(256)]
    types: list[int] = [gguf.TokenType.NORMAL] * 256
    known = set(tokens)
    merges = learn_merges(corpus if corpus else _DEFAULT_CORPUS, n_merges)
    if not merges:
        raise ValueError("the corpus yielded no merge; llama.cpp needs at least one")
    for a, b in merges:
        if a + b not in known:
            known.add(a + b)
            tokens.append(a + b)
            types.append(gguf.TokenType.NORMAL)
    special_ids = {}
    for tok in SPECIAL_TOKENS:
        special_ids[tok] = len(tokens)
        tokens.append(tok)
        types.append(gguf.TokenType.CONTROL)
    n_vocab = len(tokens)

    rng = np.random.default_rng(seed)
    head_dim = N_EMBD // N_HEAD

    def rand(*shape: int, scale: float = weight_scale) -> np.ndarray:
        return (rng.standard_normal(shape) * scale / np.sqrt(shape[-1])).astype(np.float32)

    # numpy shapes in PyTorch order (out, in); GGUFWriter reverses them into GGUF's ne order.
    token_embd = rand(n_vocab, N_EMBD, scale=1.0)
    token_embd[:, 0] = _BIAS_CARRIER
    output = (rng.standard_normal((n_vocab, N_EMBD)) * _OUTPUT_NOISE).astype(np.float32)
    output[:, 0] = 0.0
    # After the final RMS norm, dimension 0 is about sqrt(N_EMBD) * carrier / rms ~ constant.
    if bias:
        scale0 = np.sqrt(N_EMBD)
        by_text = {}
        for i, tok in enumerate(tokens):
            if i < len(tokens) - len(SPECIAL_TOKENS):
                text = bytes(_unicode_to_byte(c) for c in tok).decode("utf-8", errors="replace")
            else:
                text = tok
            by_text.setdefault(text, i)
        for text, value in bias.items():
            if text not in by_text:
                raise KeyError(f"bias token {text!r} is not in the vocabulary")
            output[by_text[text], 0] = value / scale0

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("ben2-worker tiny random llama (test fixture)")
    w.add_context_length(CONTEXT_LENGTH)
    w.add_embedding_length(N_EMBD)
    w.add_block_count(N_LAYER)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_HEAD_KV)
    w.add_rope_dimension_count(head_dim)
    w.add_rope_freq_base(500000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(n_vocab)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("llama-bpe")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges([f"{a} {b}" for a, b in merges])
    w.add_bos_token_id(special_ids[BOS])
    w.add_eos_token_id(special_ids[EOS])
    w.add_add_bos_token(False)  # the template writes bos_token itself
    w.add_chat_template(CHAT_TEMPLATE)

    # The two vocabulary-sized matrices are stored as float16 to keep the file under 1 MB.
    w.add_tensor("token_embd.weight", token_embd.astype(np.float16))
    for i in range(N_LAYER):
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(N_EMBD, np.float32))
        w.add_tensor(f"blk.{i}.attn_q.weight", _carrier_unread(rand(N_HEAD * head_dim, N_EMBD)))
        w.add_tensor(f"blk.{i}.attn_k.weight", _carrier_unread(rand(N_HEAD_KV * head_dim, N_EMBD)))
        w.add_tensor(f"blk.{i}.attn_v.weight", _carrier_unread(rand(N_HEAD_KV * head_dim, N_EMBD)))
        w.add_tensor(f"blk.{i}.attn_output.weight", _no_carrier(rand(N_EMBD, N_HEAD * head_dim)))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(N_EMBD, np.float32))
        w.add_tensor(f"blk.{i}.ffn_gate.weight", _carrier_unread(rand(N_FF, N_EMBD)))
        w.add_tensor(f"blk.{i}.ffn_up.weight", _carrier_unread(rand(N_FF, N_EMBD)))
        w.add_tensor(f"blk.{i}.ffn_down.weight", _no_carrier(rand(N_EMBD, N_FF)))
    w.add_tensor("output_norm.weight", np.ones(N_EMBD, np.float32))
    w.add_tensor("output.weight", output.astype(np.float16))

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _carrier_unread(weight: np.ndarray) -> np.ndarray:
    """Layers do not read dimension 0 either: the carrier only feeds the output bias."""
    weight[:, 0] = 0.0
    return weight


def _no_carrier(weight: np.ndarray) -> np.ndarray:
    """Layers write nothing into dimension 0, so the bias carrier stays constant."""
    weight[0, :] = 0.0
    return weight


_BYTE_OF: dict[str, int] = {}


def _unicode_to_byte(c: str) -> int:
    if not _BYTE_OF:
        _BYTE_OF.update({v: k for k, v in bytes_to_unicode().items()})
    return _BYTE_OF[c]


if __name__ == "__main__":  # pragma: no cover - manual use: python tests/gguf_fixture.py OUT.gguf
    import sys

    out = build_tiny_llama_gguf(sys.argv[1] if len(sys.argv) > 1 else "tiny-llama.gguf")
    print(out, out.stat().st_size, "bytes")


#: The classifier's verdict words (``safety.policy.VERDICTS``).
VERDICT_WORDS = ("SAFE", "BORDERLINE", "UNSAFE")


def build_verdict_llama_gguf(path: str | Path, verdict: str = "SAFE", *, corpus: str | None = None, seed: int = 0) -> Path:
    """A tiny random GGUF whose grammar-constrained classifier answer is deterministic: every
    domain ``verdict`` (and the one reason is the word ``verdict``).

    How: the corpus is extended so each verdict word is learned as ONE token (so ``"SAFE"``
    tokenizes as ``"``, ``SAFE``, ``"``), then ``bias`` gives that token +20 at every position.
    Where the grammar allows an enum word, only ``S``/``B``/``U``-prefixes are legal, and the
    biased whole word wins. ``"`` gets +30, above the word, so a free string (a reason) stops
    right after its first token; a quote cannot start an enum word, so it never competes
    there. Spaces are pushed down and closers up, as in tests/test_classifier.py."""
    if verdict not in VERDICT_WORDS:
        raise ValueError(f"verdict must be one of {VERDICT_WORDS}, got {verdict!r}")
    words = " ".join(f'"{w}"' for w in VERDICT_WORDS)
    corpus = ((corpus or _DEFAULT_CORPUS) + "\n" + "\n".join([words] * 8))
    bias = {'"': 30.0, " ": -10.0, "]": 8.0, "}": 8.0, verdict: 20.0}
    return build_tiny_llama_gguf(path, bias=bias, corpus=corpus, seed=seed)
