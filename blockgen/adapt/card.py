"""The model card written beside every adapted model: how it was made (base, recipe, data, tokens, steps, settings)
and what it measured (filled in by benchmarks/default_model.py --record)."""

from __future__ import annotations

from pathlib import Path

CARD_NAME = "MODEL_CARD.md"

# the card's title (the base's name follows) and its account of the recipe, by kind of adapter
_BLOCK_DIFFUSION = (
    "# Block-diffusion adaptation of ",
    "Made by `blockgen adapt` (the LLaDA2.0 / Fast-dLLM v2 recipe): the causal base is trained to denoise blocks of",
    "masked tokens with block-causal attention over a clean copy of the sequence (BD3-LM layout), noise level drawn",
    "per block, complementary masks so every supervised position is seen once per pair, loss on masked positions,",
    "the AR logit shift kept (token i predicted at position i-1), a block-size curriculum, and a dedicated mask",
    "token whose embedding gets Gaussian noise early in training.",
)
_GATED = (
    "# Gated drafting adapter of ",
    "Made by `blockgen adapt --gated`: the LoRA update acts at mask positions only, so every other position is the",
    "base's own causal pass; every answer token of a noisy copy is masked, in blocks counted from the answer's start,",
    "each mask seeing the clean text before its block and its block's masks, and trained to draft the token after",
    "the base's next one. blockgen's drafting loop keeps a draft only where the base writes the same token, so the",
    "text is the base's (greedy: its argmax text; sampling: its distribution).",
)


def render_card(base: str, family: dict, record: dict) -> str:
    settings = record.get("settings", {})
    data = record.get("data", {})
    sources = []
    if data.get("files"):
        sources.append(f"text files: {', '.join(Path(f).name for f in data['files'])}")
    if data.get("distilled_prompts"):
        sources.append(f"self-distillation: the base model's own answers to {data['distilled_prompts']} prompts of the "
                       "built-in set (reports, stories, explanations, lists, dialogue, letters, ...), AR mode")
    lora = settings.get("lora_rank")
    tuning = f"LoRA rank {lora} (alpha {settings.get('lora_alpha') or 2 * lora})" if lora else "full fine-tuning"
    loss = record.get("loss")
    name = "the embedded default (SmolLM2-135M-Instruct)" if base in ("default", "default-ar") else base
    intro = _GATED if family.get("gated") else _BLOCK_DIFFUSION
    lines = [
        intro[0] + name,
        "",
        *intro[1:],
        "",
        "## Decoding record",
        "",
        f"- attention: {family['attention']}, logit shift: {family['logit_shift']}, block size: {family['block_size']}"
        + (", gated (drafting)" if family.get("gated") else ""),
        f"- mask token id: {family['mask_token_id']}",
        "",
        "## Training",
        "",
        f"- data: {'; '.join(sources) or 'n/a'} ({record.get('examples', 'n/a')} examples)",
        f"- steps: {record.get('steps')} of {record.get('steps_planned')}; tokens seen: {record.get('tokens_seen', 0):,}",
        f"- hardware: {record.get('hardware', 'n/a')}; training wall time: {_duration(record.get('train_seconds'))}",
        f"- tuning: {tuning}; lr {settings.get('lr')} (warmup-stable-decay); batch {settings.get('batch_size')} x "
        f"{settings.get('seq_len')} tokens; block sizes {settings.get('block_sizes')}",
        f"- mask-embedding noise: {settings.get('mask_noise')} x the embeddings' std, decaying over the first "
        f"{settings.get('mask_noise_fraction')} of the steps",
        f"- final loss (mean of the last 20 steps): {loss:.4f}" if loss is not None else "- final loss: n/a",
        *_earlier(record.get("started_from") or []),
        "",
        "## Metrics",
        "",
    ]
    metrics = record.get("metrics") or {}
    if metrics:
        lines += [f"- {name}: {value}" for name, value in metrics.items()]
    else:
        lines.append("Not measured yet: `python benchmarks/default_model.py --model <this directory> --record`.")
    return "\n".join(lines) + "\n"


def _earlier(runs: list[dict]) -> list[str]:
    """The runs this one trained on from (init_from), oldest first, and the totals."""
    if not runs:
        return []
    lines = ["- started from an earlier adapter; its runs, oldest first:"]
    lines += [f"  - {r.get('steps')} steps, {r.get('tokens_seen', 0):,} tokens, {_duration(r.get('train_seconds'))} "
              f"on {r.get('hardware', 'n/a')}" for r in runs]
    return lines


def _duration(seconds) -> str:
    if seconds is None:
        return "n/a"
    return f"{seconds / 60:.1f} min" if seconds >= 120 else f"{seconds:.0f} s"


def write_card(directory: Path, base: str, family: dict, record: dict) -> None:
    (directory / CARD_NAME).write_text(render_card(base, family, record))
