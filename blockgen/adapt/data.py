"""Training data for adaptation: chunks of the user's text files, or self-distillation (the base model writes answers
to a built-in, varied prompt set through blockgen's own engine in AR mode, batched).

A dataset is a JSON-lines file of examples {"prompt": [ids], "completion": [ids]}; only completion tokens are
masked and supervised, the prompt is clean context. It is written once into the run directory so a resumed run
trains on the same data.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from blockgen.errors import InvalidArgumentError

# What the base model is asked to write: (kind, instruction pattern). Each pattern takes a topic. The "section" and
# "scene" kinds are the writer's own requests (one paragraph of a report section or a story part).
KINDS: tuple[tuple[str, str], ...] = (
    ("report", "Write the opening section of a short report on {topic}."),
    ("report", "Write a factual paragraph for a report about {topic}, with one concrete example."),
    ("section", "Write the 'Background' section of a short report on {topic}. One paragraph of about 150 words."),
    ("section", "Write the 'How it works' section of a short report on {topic}. One paragraph of about 150 words."),
    ("section", "Write the 'Why it matters' section of a short report on {topic}. One paragraph of about 120 words."),
    ("section", "Write the 'Conclusion' section of a short report on {topic}. One paragraph of about 100 words."),
    ("story", "Write the first paragraph of a story set around {topic}."),
    ("story", "Continue a story in which a young engineer discovers something unexpected about {topic}."),
    ("scene", "Write the opening scene of a short story about {topic}. One paragraph of about 150 words."),
    ("scene", "Write the turning point of a short story about {topic}. One paragraph of about 150 words."),
    ("scene", "Write the ending of a short story about {topic}. One paragraph of about 120 words."),
    ("explanation", "Explain {topic} to a curious twelve-year-old."),
    ("explanation", "Explain how {topic} works, step by step."),
    ("list", "List five key facts about {topic}, one per line."),
    ("list", "Give a numbered list of common mistakes people make about {topic}."),
    ("dialogue", "Write a short dialogue between a teacher and a student about {topic}."),
    ("dialogue", "Write a conversation between two friends who disagree about {topic}."),
    ("letter", "Write a short letter to a newspaper about {topic}."),
    ("summary", "Summarise what a beginner should know about {topic} in one paragraph."),
    ("comparison", "Compare two different ways of thinking about {topic}."),
    ("how-to", "Write practical advice for someone starting to learn about {topic}."),
    ("history", "Describe how people's understanding of {topic} has changed over time."),
    ("description", "Describe {topic} in vivid detail for someone who has never seen it."),
    ("argument", "Make the case, in a short essay, that {topic} deserves more attention."),
)

# Held apart from benchmarks/default_model.py's prompts (their topics appear nowhere here).
TOPICS: tuple[str, ...] = (
    "ocean tides", "volcanoes", "the water cycle", "honeybees", "solar power", "the printing press", "black holes",
    "vaccines", "rainforests", "electric cars", "the human heart", "ancient Rome", "bread baking", "chess openings",
    "glaciers", "photosynthesis", "city parks", "the internet", "lighthouses", "desert animals", "earthquakes",
    "recycling plastic", "the moon landing", "coral reefs", "public libraries", "train travel", "musical scales",
    "wind turbines", "sleep", "coffee farming", "map making", "the immune system", "bridges", "migratory birds",
    "weather forecasts", "compound interest", "the Silk Road", "mushrooms", "telescopes", "river deltas",
    "ant colonies", "the Great Wall of China", "clocks and timekeeping", "paper making", "wolves", "tea ceremonies",
    "submarines", "the periodic table", "street markets", "origami", "penguins", "the Olympic Games", "jazz music",
    "beekeeping in cities", "the Amazon river", "tsunamis", "cheese making", "hot air balloons", "octopuses",
    "the first computers", "windmills", "desert oases", "spices and the spice trade", "lightning", "snowflakes",
    "ancient Egypt", "the Vikings", "sourdough", "deep sea vents", "the Arctic", "kites", "rice farming",
    "mountain climbing", "the human brain", "earthworms", "solar eclipses", "fossils", "wool and weaving",
    "the postal service", "old radio shows", "canals", "tropical storms", "wildfires", "elephants", "glassblowing",
    "the Renaissance", "space stations", "video game design", "urban gardening", "pottery", "the stock market",
    "whales", "the Sahara", "electric guitars", "fire fighting", "recycling metals", "carnivorous plants",
    "the Roman roads", "cathedrals", "marathon running", "sea turtles", "typewriters", "the metric system",
    "tidal pools", "monsoons", "nuclear power", "dinosaurs", "the printing of money", "autumn leaves",
)

# Places, people and situations for the narrative kinds (which also take every topic above).
SETTINGS: tuple[str, ...] = (
    "a small fishing village", "an old bookshop", "a mountain observatory", "a family bakery", "a ship's captain",
    "a desert caravan", "a village school", "a traveling circus", "a city at night", "a forgotten garden",
    "an abandoned railway station", "a lighthouse island", "a mapmaker's apprentice", "a clockmaker's workshop",
    "a winter festival", "a lost dog finding its way home", "two rival inventors", "a robot gardener",
    "a long sea voyage", "a storm over the harbor", "a secret letter", "an astronaut's first day on Mars",
)


NARRATIVE_KINDS = frozenset({"story", "scene", "dialogue", "letter", "description"})


# What later passes over the prompt set add to each instruction, one per pass: the same request in another length,
# tone or audience, so that greedy answers (the same for the same prompt) differ too.
VARIATIONS: tuple[str, ...] = (
    "Keep it short.", "Write for a general audience.", "Use simple, clear language.", "Use a warm, friendly tone.",
    "Include one specific example.", "Write it for a school magazine.", "Use vivid, concrete details.",
    "Use a formal tone.", "Write for readers who know the basics already.", "Start with a surprising fact.",
)


def _all_prompts() -> list[str]:
    return [pattern.format(topic=topic) for kind, pattern in KINDS
            for topic in TOPICS + (SETTINGS if kind in NARRATIVE_KINDS else ())]


def prompt_set(count: int, seed: int = 0) -> list[str]:
    """`count` instructions from kinds x topics (narrative kinds also take SETTINGS). Each pass is a fresh shuffle
    (with `seed` and the pass number) of all of them, so the first pass has no repeats; pass r > 0 adds the
    variation VARIATIONS[(r - 1) % len] to each (after as many passes as there are variations, requests repeat)."""
    pairs = _all_prompts()
    if count < 1:
        raise InvalidArgumentError("distill", count, "must be at least 1 prompt")
    prompts: list[str] = []
    for round_ in range(-(-count // len(pairs))):
        order = list(pairs) if not round_ else [f"{p} {VARIATIONS[(round_ - 1) % len(VARIATIONS)]}" for p in pairs]
        random.Random(seed * 1009 + round_).shuffle(order)
        prompts += order
    return prompts[:count]


@dataclass(frozen=True)
class Example:
    prompt: tuple[int, ...]
    completion: tuple[int, ...]


def examples_from_files(tokenizer, files: Iterable[str | Path], seq_len: int, vocab_size: int) -> list[Example]:
    """Examples from the user's files: a `.jsonl` file is a dataset of examples (as a run writes into
    training/data.jsonl, e.g. distilled answers to reuse), any other file is text (see examples_from_texts)."""
    files = [Path(f) for f in files]
    datasets = [f for f in files if f.suffix == ".jsonl"]
    texts = [f for f in files if f.suffix != ".jsonl"]
    examples: list[Example] = []
    for path in datasets:
        if not path.is_file():
            raise InvalidArgumentError("data", str(path), "no such file")
        examples += load_examples(path, vocab_size)
    if texts:
        examples += examples_from_texts(tokenizer, texts, seq_len)
    return examples


def examples_from_texts(tokenizer, files: Iterable[str | Path], seq_len: int) -> list[Example]:
    """The files' text, tokenized, joined with EOS and cut into seq_len chunks (the last shorter one kept if it has
    at least a quarter of seq_len tokens). Every token is supervised except the first of a chunk."""
    ids: list[int] = []
    eos = tokenizer.eos_token_id
    for file in files:
        path = Path(file)
        if not path.is_file():
            raise InvalidArgumentError("data", str(path), "no such file")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidArgumentError("data", str(path), f"not UTF-8 text ({exc.reason})") from None
        if not text.strip():
            raise InvalidArgumentError("data", str(path), "is empty")
        ids += tokenizer(text, add_special_tokens=False)["input_ids"]
        if eos is not None:
            ids.append(eos)
    chunks = [ids[i : i + seq_len] for i in range(0, len(ids), seq_len)]
    chunks = [c for c in chunks if len(c) >= max(2, seq_len // 4)]
    if not chunks:
        raise InvalidArgumentError("data", [str(f) for f in files], f"too little text for one {seq_len}-token chunk")
    return [Example((), tuple(c)) for c in chunks]


def distill(
    lm,
    prompts: list[str],
    *,
    max_new_tokens: int = 192,
    batch_size: int = 16,
    temperature: float = 0.7,
    seed: int = 0,
    on_batch: Callable[[int, int], None] | None = None,
    max_tokens: int | None = None,
    max_seconds: float | None = None,
    engine: str = "blockgen",
) -> list[Example]:
    """The base model's own answers to `prompts` (chat format), generated in AR mode (block size 1), batched.

    An answer that ended with EOS keeps that EOS so the adapted model learns where text ends. With max_tokens or
    max_seconds, no new batch starts once that many completion tokens are written or that much time has passed.
    engine="transformers" samples the same weights with transformers' `generate` instead of blockgen's decode loop
    (faster for hundreds of rows on a GPU, where the loop's per-row host syncs dominate)."""
    if engine not in ("blockgen", "transformers"):
        raise InvalidArgumentError("engine", engine, "must be 'blockgen' or 'transformers'")
    examples = []
    eos = lm.stop_token_ids[0] if lm.stop_token_ids else None
    reference = _transformers_model(lm) if engine == "transformers" else None
    started, written = time.perf_counter(), 0
    for start in range(0, len(prompts), batch_size):
        if (max_tokens is not None and written >= max_tokens) or (
                max_seconds is not None and time.perf_counter() - started >= max_seconds):
            break
        batch = [lm.encode(prompt, chat=True) for prompt in prompts[start : start + batch_size]]
        if engine == "transformers":
            answers = _transformers_answers(reference, lm, batch, max_new_tokens, temperature, seed + start)
        else:
            results = lm.generate_results(batch, max_new_tokens=max_new_tokens, block_size=1,
                                          temperature=temperature, top_p=0.95, seed=seed + start, cache="auto")
            answers = [(list(r.tokens), r.finish_reason == "stop") for r in results]
        for prompt, (completion, stopped) in zip(batch, answers):
            looped = cut_loop(completion)
            if looped < len(completion):  # a loop is not worth learning: keep the text before it, unfinished
                completion, stopped = completion[:looped], False
            if stopped and eos is not None and (not completion or completion[-1] != eos):
                completion.append(eos)
            if len(completion) >= 8:
                examples.append(Example(tuple(prompt), tuple(completion)))
                written += len(completion)
        if on_batch is not None:
            on_batch(min(start + batch_size, len(prompts)), len(prompts))
    return examples


def cut_loop(tokens: list[int], n: int = 8) -> int:
    """Where a completion starts to loop: the end of the first n-gram that repeats an earlier one (len(tokens) if
    none does). Greedy answers of a small model fall into such loops; the n-gram's first copy is kept."""
    seen: set[tuple[int, ...]] = set()
    for end in range(n, len(tokens) + 1):
        gram = tuple(tokens[end - n : end])
        if gram in seen:
            return end - n
        seen.add(gram)
    return len(tokens)


def _transformers_answers(model, lm, batch: list[list[int]], max_new_tokens: int, temperature: float,
                          seed: int) -> list[tuple[list[int], bool]]:
    """(completion up to and with its first stop token, whether it stopped) per prompt, from transformers' generate
    with `model` (left-padded batch, nucleus sampling at top-p 0.95 as the engine path)."""
    stops = set(lm.stop_token_ids)
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else (min(stops) if stops else 0)
    width = max(len(ids) for ids in batch)
    ids = torch.full((len(batch), width), pad, dtype=torch.long)
    attention = torch.zeros((len(batch), width), dtype=torch.long)
    for row, prompt in enumerate(batch):
        ids[row, width - len(prompt):] = torch.tensor(prompt)
        attention[row, width - len(prompt):] = 1
    torch.manual_seed(seed)
    with torch.inference_mode():
        out = model.generate(input_ids=ids.to(lm.device), attention_mask=attention.to(lm.device),
                             do_sample=temperature > 0, temperature=temperature if temperature > 0 else None,
                             top_p=0.95 if temperature > 0 else None, max_new_tokens=max_new_tokens,
                             pad_token_id=pad, eos_token_id=sorted(stops) or None)
    answers = []
    for row in out[:, width:].tolist():
        cut = next((n for n, token in enumerate(row) if token in stops), None)
        answers.append((row[: cut + 1], True) if cut is not None else (row, False))
    return answers


def _transformers_model(lm):
    """transformers' load of the model's checkpoint directory, on its device and in its dtype (for one distill call:
    not kept afterwards, so training gets the memory back)."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(lm.path, dtype=lm.dtype).to(lm.device).eval()


def save_examples(examples: list[Example], path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    with tmp.open("w") as f:
        for ex in examples:
            f.write(json.dumps({"prompt": list(ex.prompt), "completion": list(ex.completion)}) + "\n")
    tmp.replace(path)


def load_examples(path: Path, vocab_size: int) -> list[Example]:
    examples = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        try:
            raw = json.loads(line)
            example = Example(tuple(int(t) for t in raw["prompt"]), tuple(int(t) for t in raw["completion"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidArgumentError("data", f"{path}:{number}", f"not a dataset line ({exc})") from None
        if any(not 0 <= t < vocab_size for t in example.prompt + example.completion):
            raise InvalidArgumentError("data", f"{path}:{number}", f"token id outside [0, {vocab_size})")
        examples.append(example)
    if not examples:
        raise InvalidArgumentError("data", str(path), "holds no examples")
    return examples


def _fitted(ex: Example, seq_len: int) -> tuple[list[int], int]:
    """An example as one row of at most seq_len tokens (the end of its prompt, at most half of seq_len, and the
    start of its completion) and its prompt's length in that row."""
    prompt = list(ex.prompt[-(seq_len // 2):]) if ex.prompt else []
    return (prompt + list(ex.completion))[:seq_len], len(prompt)


def collate(examples: list[Example], seq_len: int, pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ids, valid, maskable), each (B, L) with L the longest row (at most seq_len), padded on the right.

    A row longer than seq_len keeps the end of its prompt (at most half of seq_len) and the start of its completion."""
    fitted = [_fitted(ex, seq_len) for ex in examples]
    rows, prompt_lens = [r for r, _ in fitted], [n for _, n in fitted]
    length = max(map(len, rows))
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    valid = torch.zeros(len(rows), length, dtype=torch.bool)
    maskable = torch.zeros(len(rows), length, dtype=torch.bool)
    for i, (row, p) in enumerate(zip(rows, prompt_lens)):
        ids[i, : len(row)] = torch.tensor(row)
        valid[i, : len(row)] = True
        maskable[i, p : len(row)] = True
    return ids, valid, maskable


def _round_up(length: int, align: int) -> int:
    return -(-length // align) * align


def _span(ex: Example, seq_len: int, align: int) -> int:
    """The room an example takes in a packed row: its fitted length rounded up to a multiple of align (at most
    seq_len, a multiple of align)."""
    return _round_up(len(_fitted(ex, seq_len)[0]), align)


def pack(examples: list[Example], order: list[int], seq_len: int, align: int, open_rows: int = 16) -> list[list[int]]:
    """Rows of example indices, taken in `order`, each row's spans (see _span) summing to at most seq_len: first
    fit over the last `open_rows` rows still open, so short answers share a row instead of padding one each."""
    if align < 1 or seq_len % align:
        raise InvalidArgumentError("seq_len", seq_len, f"must be a multiple of the packing alignment {align}")
    rows: list[list[int]] = []
    room: list[int] = []
    for index in order:
        span = _span(examples[index], seq_len, align)
        start = max(0, len(rows) - open_rows)
        slot = next((r for r in range(start, len(rows)) if room[r] >= span), None)
        if slot is None:
            rows.append([])
            room.append(seq_len)
            slot = len(rows) - 1
        rows[slot].append(index)
        room[slot] -= span
    return rows


def collate_packed(rows: list[list[Example]], seq_len: int, pad_id: int, align: int
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ids, valid, maskable, positions, segments), each (B, seq_len): each row holds its examples one after another,
    each starting at a multiple of align, positions counting from 0 in each, segments numbering them (-1 on
    padding). An example's first token is not maskable (nothing in its segment predicts it)."""
    b = len(rows)
    ids = torch.full((b, seq_len), pad_id, dtype=torch.long)
    valid = torch.zeros(b, seq_len, dtype=torch.bool)
    maskable = torch.zeros(b, seq_len, dtype=torch.bool)
    positions = torch.zeros(b, seq_len, dtype=torch.long)
    segments = torch.full((b, seq_len), -1, dtype=torch.long)
    for i, row in enumerate(rows):
        at = 0
        for number, ex in enumerate(row):
            tokens, prompt_len = _fitted(ex, seq_len)
            end = at + len(tokens)
            if end > seq_len:
                raise InvalidArgumentError("rows", i, f"its examples need more than seq_len={seq_len} tokens")
            ids[i, at:end] = torch.tensor(tokens)
            valid[i, at:end] = True
            maskable[i, at + max(1, prompt_len):end] = True
            positions[i, at:end] = torch.arange(len(tokens))
            segments[i, at:end] = number
            at += _round_up(len(tokens), align)
    return ids, valid, maskable, positions, segments
