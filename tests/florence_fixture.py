"""A tiny random Florence-2 for tests: built offline in a fraction of a second, well under 1 MB,
saved with ``save_pretrained`` so it loads back through the same code as the real
``florence-community/Florence-2-base`` checkpoint (``Florence2ForConditionalGeneration`` +
``Florence2Processor``, no ``trust_remote_code``).

What it is made of:

* **tokenizer** — a byte-level BPE (``RobertaTokenizer``, which transformers 5 exposes as
  ``BartTokenizer``/``BartTokenizerFast``, the class the real checkpoint names) over the 95
  printable ASCII byte symbols, the usual BART specials (``<s> <pad> </s> <unk> <mask>``) and
  the ``<image>`` token ``Florence2Processor`` needs (``tokenizer.image_token``). Merges are
  passed as **tuples** (strings are split on spaces, and ``Ġ`` pairs break).
* **model** — a Florence2 config with a 4-stage vision tower of 8–16 channels (total stride 32,
  so a 64×64 input gives 2×2 = 4 spatial tokens) and a 1+1-layer BART of width 32 whose
  ``max_position_embeddings`` is the real 1024, so ``max_new_tokens=512`` is valid.
* **processor** — ``CLIPImageProcessor`` settings as in the real ``preprocessor_config.json``
  (no centre crop, bicubic, ImageNet mean/std) at 64×64, ``image_seq_length`` equal to the
  number of image features the model really emits (**spatial tokens + 1**: the projector
  appends one temporal-mean token; 4 + 1 = 5 here, 24² + 1 = 577 for the real 768² input —
  measured from the model, not assumed), and a ``post_processor_config`` (without one,
  ``post_process_generation`` raises "Unsupported parse task: pure_text").

Random weights caption an image with random printable characters when sampling and with a
repeated character under beam search. ``fixed_caption="..."`` instead biases the decoder so
that every image, under greedy, beam or sampled decoding, captions as exactly that text:

* every decoder layer's residual branches are switched off (``out_proj`` of self- and
  cross-attention and ``fc2`` zeroed), so the last hidden state at decoding step ``t`` is
  ``LayerNorm(tok_emb[prev] + pos_emb[t])``;
* each step ``t`` gets its own zero-mean orthonormal direction ``u_t``;
  ``pos_emb[t] = 64·u_t`` dominates the token embedding, so the hidden state is ≈ ``√d·u_t``;
* the (tied) embedding row of the token wanted at step ``t`` gets ``+8·u_t``, so its logit
  is ≈ ``8·√d`` ≈ 45 against ≈ 0 for every other token: ``<s>``, the caption's tokens, ``</s>``.

The image still runs through the vision tower and the encoder; it just cannot change the
answer. The caption must be printable ASCII and at most ``d_model - 3`` byte tokens long
(``d_model`` grows to fit).

Command line (to inspect one)::

    python tests/florence_fixture.py OUT_DIR ["fixed caption"]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

FIXED_CAPTION = "a tiny test cat"
IMAGE_SIZE = 64
D_MODEL = 32
#: Florence-2-base's BART has 1024 learned positions; keep it so max_new_tokens=512 is legal.
MAX_POSITIONS = 1024
POST_PROCESSOR_CONFIG = {
    "pure_text": {},
    "ocr": {
        "pattern": r"(.+?)<loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)>",
        "area_threshold": 0.0,
    },
    "phrase_grounding": {"banned_grounding_tokens": ["the image"]},
    "description_with_bboxes": {},
    "description_with_polygons": {},
    "polygons": {},
    "bboxes": {},
    "description_with_bboxes_or_polygons": {},
}
_POS_SCALE = 64.0
_TOKEN_SCALE = 8.0


def _tokenizer():
    from transformers import RobertaTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    byte_sym = bytes_to_unicode()
    vocab: dict[str, int] = {}
    for tok in ("<s>", "<pad>", "</s>", "<unk>"):  # BART's ids 0..3
        vocab[tok] = len(vocab)
    for b in range(32, 127):  # printable ASCII; space is "Ġ"
        vocab[byte_sym[b]] = len(vocab)
    merges = [("Ġ", "a"), ("t", "h"), ("th", "e"), ("Ġ", "the")]  # tuples, not "a b" strings
    for a, b in merges:
        vocab[a + b] = len(vocab)
    vocab["<mask>"] = len(vocab)
    return RobertaTokenizer(vocab=vocab, merges=merges, extra_special_tokens={"image_token": "<image>"})


def _caption_ids(tok, caption: str) -> list[int]:
    if not caption or not caption.isascii() or not caption.isprintable() or caption != caption.strip():
        raise ValueError(f"fixed_caption must be non-empty printable ASCII without outer spaces, got {caption!r}")
    ids = tok.encode(caption, add_special_tokens=False)
    if tok.decode(ids) != caption or tok.unk_token_id in ids:
        raise ValueError(f"fixed_caption {caption!r} does not round-trip through the tiny tokenizer")
    return ids


def _bias_to_fixed_caption(model, tok, caption_ids: list[int]) -> None:
    """See the module docstring: step t of the decoder always emits ``wanted[t]``."""
    import torch

    lm = model.model.language_model
    d = lm.config.d_model
    wanted = [tok.bos_token_id, *caption_ids, tok.eos_token_id]
    gen = torch.Generator().manual_seed(1234)
    raw = torch.randn(d, len(wanted), generator=gen)
    raw -= raw.mean(dim=0, keepdim=True)  # zero-mean columns: LayerNorm keeps their direction
    directions, _ = torch.linalg.qr(raw)  # orthonormal, still zero-mean (d x steps)
    with torch.no_grad():
        for layer in lm.decoder.layers:
            for lin in (layer.self_attn.out_proj, layer.encoder_attn.out_proj, layer.fc2):
                lin.weight.zero_()
                if lin.bias is not None:
                    lin.bias.zero_()
        pos = lm.decoder.embed_positions
        emb = lm.shared.weight  # tied with lm_head
        for step, token in enumerate(wanted):
            u = directions[:, step]
            pos.weight[step + pos.offset] = _POS_SCALE * u
            emb[token] += _TOKEN_SCALE * u
        # Steps past the caption keep asking for </s> (only reached if </s> was not chosen).
        last = directions[:, len(wanted) - 1]
        for step in range(len(wanted), min(len(wanted) + 8, pos.weight.shape[0] - pos.offset)):
            pos.weight[step + pos.offset] = _POS_SCALE * last


def _split_legacy_layout(path: Path, tok) -> None:
    """Rewrite the processor files the way transformers 4.x (and the published checkpoint, whose
    file list is in the manifest) lays them out: image-processor settings in
    ``preprocessor_config.json``, the processor's own in ``processor_config.json``,
    ``tokenizer_class`` "BartTokenizer", and ``vocab.json`` / ``merges.txt`` /
    ``added_tokens.json`` / ``special_tokens_map.json`` next to ``tokenizer.json``."""
    proc_file = path / "processor_config.json"
    proc = json.loads(proc_file.read_text())
    image = proc.pop("image_processor")
    image["processor_class"] = "Florence2Processor"
    (path / "preprocessor_config.json").write_text(json.dumps(image, indent=2) + "\n")
    proc_file.write_text(json.dumps(proc, indent=2) + "\n")
    tok_file = path / "tokenizer_config.json"
    tok_config = json.loads(tok_file.read_text())
    tok_config["tokenizer_class"] = "BartTokenizer"
    tok_file.write_text(json.dumps(tok_config, indent=2) + "\n")
    bpe = json.loads((path / "tokenizer.json").read_text())["model"]
    (path / "vocab.json").write_text(json.dumps(bpe["vocab"], ensure_ascii=False) + "\n")
    merges = [m if isinstance(m, str) else " ".join(m) for m in bpe["merges"]]
    (path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    (path / "added_tokens.json").write_text(json.dumps({"<image>": tok.image_token_id}) + "\n")
    specials = {k: tok_config[k] for k in ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")}
    (path / "special_tokens_map.json").write_text(json.dumps(specials, indent=2) + "\n")


def build_tiny_florence(
    path: str | Path,
    *,
    fixed_caption: str | None = None,
    seed: int = 0,
    legacy_layout: bool = False,
) -> Path:
    """Write a tiny random Florence-2 (model + processor) into ``path`` and return it.

    ``fixed_caption``: bias the decoder so every image captions as exactly this text (see the
    module docstring). ``seed``: the random initialisation. ``legacy_layout``: also split the
    processor files the transformers 4.x way, as the published checkpoint has them."""
    import torch
    from transformers import BartConfig, Florence2Config, Florence2ForConditionalGeneration, Florence2Processor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
    from transformers.models.florence2.configuration_florence2 import Florence2VisionConfig

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tok = _tokenizer()
    caption_ids = _caption_ids(tok, fixed_caption) if fixed_caption is not None else []
    d_model = max(D_MODEL, -(-(len(caption_ids) + 3) // 8) * 8)

    vision = Florence2VisionConfig(
        depths=(1, 1, 1, 1),
        embed_dim=(8, 8, 8, 16),
        num_heads=(1, 1, 1, 2),
        num_groups=(1, 1, 1, 2),
        window_size=2,
        projection_dim=d_model,
        drop_path_rate=0.0,
        max_position_embeddings=8,
        max_temporal_embeddings=8,
    )
    text = BartConfig(
        vocab_size=len(tok),
        d_model=d_model,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_position_embeddings=MAX_POSITIONS,
        dropout=0.0,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        decoder_start_token_id=tok.eos_token_id,
        forced_eos_token_id=tok.eos_token_id,
    )
    config = Florence2Config(
        vision_config=vision.to_dict(), text_config=text.to_dict(), image_token_id=tok.image_token_id
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Florence2ForConditionalGeneration(config).eval()
    if fixed_caption is not None:
        _bias_to_fixed_caption(model, tok, caption_ids)

    with torch.inference_mode():  # measure, don't assume: spatial tokens + 1 temporal token
        feats = model.get_image_features(torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE)).pooler_output
    image_processor = CLIPImageProcessorPil(
        do_resize=True,
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        resample=3,
        do_center_crop=False,
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
        do_convert_rgb=True,
    )
    image_processor.image_seq_length = int(feats.shape[1])
    processor = Florence2Processor(
        image_processor=image_processor, tokenizer=tok, post_processor_config=POST_PROCESSOR_CONFIG
    )
    model.save_pretrained(path)
    processor.save_pretrained(path)
    if legacy_layout:
        _split_legacy_layout(path, tok)
    return path


if __name__ == "__main__":  # pragma: no cover - manual inspection helper
    if len(sys.argv) not in (2, 3):
        raise SystemExit(__doc__.rsplit("Command line", 1)[1])
    out = build_tiny_florence(sys.argv[1], fixed_caption=sys.argv[2] if len(sys.argv) == 3 else None)
    print(out, sum(f.stat().st_size for f in out.iterdir()), "bytes")
