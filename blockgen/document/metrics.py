"""Document quality measures: LongWriter's length score, distinct-4, repeated paragraphs, plan adherence, and the
fluency measures (judge perplexity, run-on sentences, fragments, meta or assistant phrases, repeated 8-grams)."""

from __future__ import annotations

import math
import re
import statistics
from collections import Counter

import torch

_WORDS = re.compile(r"[A-Za-z0-9'’-]+|[\u4e00-\u9fff]")
_SENTENCE = re.compile(r"(?<=[.!?])[\"'”’)]*\s+")
_TERMINAL = re.compile(r"[.!?][\"'”’)\]]*$")
# What a document should never say: an assistant talking to the user, the text talking about itself or the prompt,
# social-media debris. Each pattern is a phrase, matched case-insensitively at word boundaries.
META_PATTERNS = (
    r"sure[,!]", r"certainly[,!]", r"of course[,!]", r"here(?:'s| is| are) (?:a|an|the|my|your|some)\b",
    r"i hope (?:this|that|you)", r"let me know", r"feel free", r"happy to help", r"i'd be (?:happy|glad)",
    r"as an ai", r"i am an ai", r"helpful (?:ai|assistant)", r"you are a helpful", r"i'?m (?:so )?glad",
    r"glad (?:you|to help)", r"thank you for", r"smollm", r"hugging ?face", r"you guys", r"keep up the",
    r"great question", r"the author", r"already (?:explained|mentioned|discussed|covered|been said)",
    r"the (?:report|story|text) (?:has|so far)", r"the story (?:begins|ends|takes a|continues)",
    r"in this (?:section|paragraph|report|story|essay)", r"this (?:section|paragraph) (?:will|discusses|covers|is)",
    r"the (?:text|passage|paragraph|section) (?:above|below|concludes)", r"the previous (?:section|paragraph)",
    r"summary of (?:the|what)", r"using the text", r"word count", r"\(\d+ words\)", r"parts? \d+ (?:and \d+ )?of",
    r"(?:the )?next paragraph", r"(?:this|the) (?:report|story) (?:will|explores|concludes|is divided|ends|begins|presents|covers)",
    r"(?:are|is) presented in", r"i don'?t understand", r"if you'?d like", r"i can (?:do|help|rewrite|rephrase)",
    r"(?:please )?go ahead and", r"share the next", r"rewritten", r"rephrase", r"looking forward to your",
    r"your (?:next )?draft", r"minor (?:adjustments|tweaks|changes)", r"(?:revised|this) version",
    r"(?<!\w)#\w+", r"(?<!\w)@\w+",
    # the text describing itself or its parts ("The second paragraph tells about...", "The report is about...")
    r"the (?:first|second|third|fourth|fifth|next|last|final|following) (?:paragraph|section|part) (?:tells|talks|is|"
    r"describes|explains|discusses|covers|shows)",
    r"the (?:report|article|essay|text|story|passage|paragraph|section) (?:is about|talks about|tells about|discusses|"
    r"describes|provides|gives an?|offers|focuses on|highlights)",
    r"(?:it|this) (?:talks|tells) about", r"(?:your|my) (?:article|essay|report|text|paragraph|writing|draft)\b",
    r"this (?:article|essay)\b", r"you(?:'ve| have) been (?:writing|talking|reading)",
    r"i(?:'m| am) going to (?:tell you (?:how|about)|go on|go back|write|explain|talk)",
    r"the final answer", r"i would like to (?:ask|say|share|add|thank)", r"the answer (?:to this question|you'?re)",
    r"(?:it'?s|it has) been (?:a few|some|several) (?:weeks|days|months) since i",
    r"this is (?:the|a) (?:main|first|second|last|final|next|new) (?:section|part|paragraph|chapter)",
    r"(?:main )?(?:findings|points|section|part) of (?:the|this) (?:report|story|essay|article)",
    # the writing itself as the subject ("I decided to write a report", "the process described in the report")
    r"(?:decided|wanted|tried|going|set out|started) to write (?:a|an|the|this|my) (?:report|story|essay|article)",
    r"(?:described|mentioned|discussed|explained|outlined|presented)(?: \w+){0,3} in (?:the|this) (?:report|story|"
    r"essay|article|text|section)\b",
    r"(?:end|start|beginning|rest|outline) of (?:the|this) (?:report|story|essay|article)\b",
    r"(?:finish|end|start|begin|continue)(?:s|ed|ing)? (?:the|this|my|her|his) (?:report|story|essay|article)\b",
    r"(?:your|my) (?:previous|last|earlier) (?:work|answer|response|message|post)\b",
    r"we(?: will|'ll| are going to| shall) (?:be )?(?:discuss|talk|look|explor|cover|learn|examin)\w*",
    r"this topic (?:requires|is|will|can)\b",
    r"(?:it'?s|it is|this is) (?:clear|easy|simple)(?: and \w+)? to (?:read|understand|follow)\b",
    r"(?:a|the|this) series of (?:reports|articles|posts|essays)\b",
    r"the (?:report|story|essay|article|text) continues\b", r"you will have to (?:look|read)\b",
    r"the (?:report|article|essay|study) (?:also )?(?:notes|says|states|mentions|explains|shows that)",
    r"(?:has|have|had) (?:written|wrote) (?:a|an|the|this|his|her|their|my) (?:\w+ )?(?:report|essay|article)\b",
    # offers to a reader and speeches to an audience ("If you would like, I can explain...", "Ladies and gentlemen")
    r"if you would like", r"i can (?:explain|show|tell|give|provide|write|describe|walk)\b", r"ladies and gentlemen",
    # the text judging how it is written ("The story is very complex, but the explanation is concise", "is told in a
    # way that", "The introduction to the section is as follows")
    r"(?:is|are) as follows", r"the introduction to the",
    r"(?:is|are) (?:told|explained|given|described|presented|written) in a (?:\w+ )?way",
    # the writing announcing itself ("The essay will wrap up", "The conclusion will add", "The reason for this 200
    # words") or its reader ("The story left the reader with...", "As the story unfolded")
    r"(?:this|the|that) (?:report|story|essay|article|conclusion|introduction|summary|analysis|final paragraph|"
    r"paragraph|section)s? (?:will|would|is going to|shall)\b", r"(?:this|that) (?:short |long )?essay\b",
    r"(?:this|these|the) \d+ words", r"the readers?\b", r"as the story (?:unfold|unfolds|unfolded|went|goes|began)\b",
    r"the story (?:left|had left|leaves|was about|is about|marked|ended with|had taken|took a)\b",
    # the narration reporting the plot's progress ("The story had just taken a turning point", "The story of two rival
    # bakers in a mountain village has now reached a tantalizing crossroads")
    r"the story (?:of (?:[\w'-]+ ){1,10})?(?:has|had) (?:just |now |already )*(?:taken|reached|come to) (?:a |an |its "
    r"|the )?(?:[\w-]+ )?(?:turning point|crossroads|climax|twist|turn|end|conclusion|peak)\b",
    r"the story (?:went|goes|then went) on to (?:explore|tell|describe|show|discuss|explain)\b",
    # a report reviewing itself ("one of the highlights of the report", "In a report on the printing press, there
    # are several key points", "The last point was about the lesson")
    r"highlights? of (?:the|this) (?:report|story|essay|article)\b",
    r"(?:^|(?<=[.!?] ))in a (?:report|story|essay|article) (?:on|about)\b",
    r"the (?:last|first|next|final|second|third) point (?:was|is|will be) about\b",
    # a report judging or steering its own writing (read in a vaccines report that turned into advice about itself:
    # "The report goes on to explain how vaccines work, but the writer does not provide enough detail", "There are many
    # ways to improve this report", "Well done, you've done it right")
    r"the (?:report|essay|article|paper|text) (?:goes|went|then goes) on to\b",
    r"the (?:report|story|essay|article|paper|text) (?:now )?(?:focuses|provides|turns|is designed to|is devoted to)\b",
    r"the writer (?:does not|doesn't|did not|could|should|seems|missed|may|might|is focusing|fails)\b",
    r"(?:improve|shorten|expand|revise|rewrite|edit) (?:this|the|your) (?:report|section|paragraph|essay|story|"
    r"main findings|introduction|conclusion)\b", r"\bwell done\b[,!.]", r"you'?ve done it\b",
    r"\babout \d{2,4} words\b", r"the outline (?:is|was|has been) (?:left|incomplete)\b",
    r"paragraph (?:can|could|should) be added\b", r"(?:repeat|skip) the section\b", r"without (?:any |a )?heading\b",
    r"the (?:final|last|previous|next) paragraph,? (?:focusing|focuses|goes|describes|explains)\b",
    r"here(?:'s| is| are) (?:one|two|three|another) (?:paragraph|sentence|version|example of (?:a|the) report)\b",
    r"this (?:report|essay|article) (?:is about|was written|only goes|covers)\b", r"the report (?:was|is) written by\b",
    r"the report only goes\b", r"you'?ve (?:also |even )?shown\b", r"one-sentence (?:story|summary|answer)\b",
    r"let'?s (?:start|begin|discuss|look|dive|explore|take a look|talk|move on|break)\b",
    r"the (?:explanation|story|report|text|article|essay) is (?:very |quite |so )?(?:complex|concise|clear|simple|easy|"
    r"detailed|short|long|well)",
    # the request read back as a rule, or the reader told to go and read ("The report should be about...", "You can
    # delve into the huge topic of...")
    r"the (?:report|story|essay|article|text|paragraph|section) (?:should|must|needs to) (?:be about|cover|focus|"
    r"include|explain|discuss|describe|talk)\b",
    r"you (?:can|could|may) delve\b",
    # advice to the person who asked, about their text ("Your introduction touches on...", "you can talk about the
    # factors", "use bullet points", "You have covered the basics", "as you've just been discussing")
    r"your (?:introduction|analysis|conclusion|summary|research|section|findings|outline|work)\b",
    r"you (?:can|could|may|might|should|will) (?:also |then )?(?:talk|write) about\b", r"bullet points?\b",
    r"you (?:can|could|should) (?:also )?add (?:a|an|another|more|some) (?:\w+ )?(?:paragraph|section|sentence|example|"
    r"detail)s?\b", r"you (?:can|could) take (?:it|this) further\b", r"you will cover\b",
    r"you(?:'ve| have) (?:just |also |already )?(?:mentioned|covered|discussed|explained|described|written|added|"
    r"talked about|been discussing|been talking about)\b",
    r"the (?:report|story|essay|article|text|topic) is covered\b",
    r"this explanation (?:is|has|focuses|provides|uses|was)\b", r"this answer (?:is|was)\b",
    # a reviewer's voice on the document's own parts ("The introduction touches on the science, but the main findings
    # are too general. The analysis section is not provided with the right focus. The sentence could be more concise.")
    r'"[\w\s\'-]{2,40}" section\b', r"\b(?:analysis|introduction|conclusion|background|findings) section\b",
    r"the (?:introduction|background|main findings|main results|analysis|conclusion) (?:touches on|is too|are too|"
    r"is not|are not|does not|do not|lacks?|needs? (?:more|to))\b",
    r"the (?:content|sentence|final sentence|wording|tone|text) (?:is too|could be (?:more|less)|should be (?:more|less)|"
    r"does not provide|is not to the point)\b", r"(?:end|start|beginning|close) to the (?:report|story|essay)\b",
    r"in a section that\b",
    r"\bin the (?:first|second|third|last|final|previous|next|opening) paragraph\b",
    r"the (?:first|second|third|last|final|opening) paragraph (?:sets|gives|holds|introduces|provides|lays)\b",
    r"\ba must-read\b",
    r"(?:^|(?<=[.!?] ))the (?:report|essay|article) (?:concluded|ended)\b(?! that)",
    r"the (?:report|story|essay|article) had (?:just )?(?:one|a|two) (?:detail|sentence|paragraph|section|point)s?\b",
    r"(?:with|in|by) (?:a|one|the|this) (?:\w+ )?sentence (?:about|that (?:was|is|says|said))\b", r"tailored to the (?:audience|readers?)\b",
    r"\((?:\w+ )?edited\b", r"in the context of (?:this|the) (?:report|story|essay|article|text)\b",
    r"subject of (?:today'?s|the|this) (?:report|essay|article)\b",
    # an edit of a draft described ("This revised paragraph focuses on...", "The original text was short", "The
    # paragraphs were reorganized"), an instruction read back ("Do not repeat a sentence"), "This chapter illustrates"
    r"(?:this|the) (?:revised|rewritten|original|edited) (?:paragraph|text|version|report|essay|draft)\b",
    r"the (?:paragraphs|sentences) (?:were|have been) (?:reorganized|rewritten|revised|edited|combined)\b",
    r"do not repeat\b", r"this chapter (?:illustrates|highlights|shows|explains|discusses|describes)\b",
    # the mode rather than a phrasing: a sentence whose subject is the text itself, or one of its parts, doing what a
    # text does ("The report also discusses...", "The essay delves into...", "The first paragraph focuses on...",
    # "The essay concludes with the main messages"), present tense only ("The report provided by the ministry" is
    # a report in the world); its purpose; its style; "this sentence"
    r"(?:^|(?<=[.!?] )|(?<=[.!?][\"\u201d] )|(?<=\n))(?:the|this|that|our|my) (?:(?:first|second|third|fourth|fifth|"
    r"next|last|final|following|previous|present|whole|entire|current|above) )?(?:report|essay|article|paper|"
    r"paragraph|section|text|passage|sentence|chapter|piece|story|presentation)s? (?:(?:also|then|further|now|first|finally|"
    r"briefly|here|mainly|primarily) )?(?:discusses|explores|delves|concludes|focuses|highlights|examines|touches on|"
    r"covers|describes|explains|presents|provides|offers|argues|introduces|outlines|summari[sz]es|reviews|addresses|"
    r"analy[sz]es|illustrates|emphasi[sz]es|mentions|sheds light|details|looks at|aims to|seeks to|is written|"
    r"was written|is divided)\b",
    r"(?:purpose|aim|goal|scope) of (?:this|the) (?:report|essay|article|paper|section|paragraph|text)\b",
    r"(?:is|was) written in an? (?:\w+ )?(?:clear|simple|concise|engaging|accessible|narrative|formal|informal|"
    r"friendly|straightforward|easy)\b", r"this sentence (?:is|was|has|makes|shows|means|says)\b",
    r"(?:is|was) written in (?:a|an|the) (?:[\w-]+ ){0,4}(?:style|tone|voice|manner)\b", r"written by a human\b",
    r"as you (?:mentioned|said|noted|pointed out|suggested|asked)\b", r"(?:in|within) (?:one|a single) paragraph\b",
    r"(?:did not|didn't|does not|doesn't) have a heading\b",
    r"the (?:conclusion|introduction|analysis|summary) of (?:the|this) (?:report|essay|article|story)\b",
    r"(?:it|this) concludes by (?:saying|stating|noting|arguing)\b",
    # ... or its parts, looking back ("The first paragraph discussed...", "The next section explored...", "The report
    # also delved into...", "The report's section focused on..."), instructions read back as the writer's task ("In
    # this simple yet profound paragraph, you will highlight...", "You will avoid using bold formatting"), and stage
    # directions ("(takes a moment to reflect, then looks at you)", "(smiles)")
    r"(?:^|(?<=[.!?] )|(?<=\n))(?:the|this|that) (?:(?:first|second|third|fourth|fifth|next|last|final|following|"
    r"previous) )?(?:paragraph|section|chapter)s? (?:also )?(?:discussed|explored|delved|focused|highlighted|examined|"
    r"covered|described|explained|presented|mentioned|touched on|looked at|addressed|summari[sz]ed|outlined|"
    r"introduced)\b",
    r"the (?:report|essay|article|text) (?:also )?(?:delved|explored|touched on)\b",
    r"this (?:report|essay|article) (?:has|had) (?:also )?(?:added|included|covered|discussed|explored|shown)\b",
    r"the (?:report|article|essay|text) (?:is|was) (?:looking at|focusing on|discussing|exploring|examining)\b",
    r"the (?:explanation|discussion|argument|focus) in (?:the|this) (?:report|article|essay)\b",
    r"this (?:report|article|essay), (?:which|we)\b", r"this (?:report|article|essay) is (?:explained|described|"
    r"illustrated) by\b", r"the (?:report|article|essay|story|text) (?:now )?reaches (?:the|its) (?:end|conclusion)\b",
    r"(?:the|this) (?:first|second|third|fourth|fifth|next|last|final|following) (?:paragraph|section) "
    r"(?:will|would)\b", r"(?:added|included) (?:to|in) (?:the|this) (?:report|essay|article)\b",
    r"the (?:report|essay|article)'s (?:section|sections|conclusion|introduction|analysis|main findings|focus)\b",
    r"in this (?:[\w-]+ ){1,3}(?:paragraph|section|report|essay|article)\b",
    r"you (?:will|should|must|need to) (?:highlight|provide|present|discuss|avoid using|write|focus on|"
    r"use (?:simple|clear|plain)|explain (?:the|how|why)|describe (?:the|how))\b",
    r"\((?:smiles|smiling|pauses|pausing|laughs|laughing|nods|nodding|sighs|sighing|chuckles|winks|grins|takes a|"
    r"looks at|leans|makes a|gestures)\b[^)]*\)",
    # the task itself read back as a heading ("How to add one paragraph: The causes are...", "How to make it: ...")
    r"how to (?:add|write) (?:one|a|another|this) (?:\w+ )?paragraph\b",
    r"(?:^|(?<=[.!?] )|(?<=\n))how to [\w' ]{1,40}:",
)
_META = re.compile("|".join(rf"(?:\b{p})" if p[0].isalpha() else rf"(?:{p})" for p in META_PATTERNS), re.IGNORECASE)


def words_of(text: str) -> list[str]:
    return _WORDS.findall(text)


def sentences_of(text: str) -> list[str]:
    """Sentences: split after . ! ? (and closing quotes) and at line breaks."""
    return [s.strip() for line in text.splitlines() for s in _SENTENCE.split(line.strip()) if s.strip()]


def run_on_share(text: str, limit: int = 60) -> float:
    """Share of sentences longer than `limit` words."""
    sentences = sentences_of(text)
    return sum(len(words_of(s)) > limit for s in sentences) / len(sentences) if sentences else 0.0


def ends_a_sentence(text: str) -> bool:
    """Whether the text ends with . ! or ? (closing quotes or brackets may follow)."""
    return bool(_TERMINAL.search(text.strip()))


def fragments(paragraphs: list[str], min_words: int = 8) -> int:
    """Paragraphs that are fragments: fewer than `min_words` words, or ending without a sentence end."""
    return sum(1 for p in paragraphs if p.strip() and (len(words_of(p)) < min_words or not ends_a_sentence(p)))


def meta_phrases(text: str) -> list[str]:
    """The meta or assistant phrases in a text (see META_PATTERNS)."""
    return [m.group(0) for m in _META.finditer(text)]


_FIRST_PERSON = re.compile(r"\b(?:I|me|my|mine|myself)\b|\bI'(?:m|ve|d|ll)\b")


def in_first_person(sentence: str) -> bool:
    """Whether a sentence speaks in the first person singular outside quotation marks."""
    return bool(_FIRST_PERSON.search(_QUOTED.sub(" ", sentence)))


_QUOTED = re.compile(r'"[^"]*"|“[^”]*”')


def first_person_share(text: str, *, narration_only: bool = False) -> float:
    """The share of sentences in the first person singular ("As I stepped onto the beach..."): a narrator's voice, out
    of place in a report; with `narration_only`, what is said inside quotation marks does not count (a story's
    dialogue speaks as "I" whoever narrates)."""
    if narration_only:  # quotations taken out of the whole text first: a quote may run over several sentences
        sentences = [s for s in sentences_of(_QUOTED.sub(" ", text)) if words_of(s)]
    else:
        sentences = sentences_of(text)
    return sum(1 for s in sentences if _FIRST_PERSON.search(s)) / len(sentences) if sentences else 0.0


def self_repetition(text: str) -> float:
    """The share of a text's content-word pairs that it already said (0: none again; a loop on "the rollercoaster
    effect" scores high, however the words around it vary). See cleanup.content_pairs."""
    from blockgen.document.cleanup import content_pairs

    pairs = content_pairs(text)
    return 1.0 - len(set(pairs)) / len(pairs) if pairs else 0.0


def fixation(text: str, free: float = 0.2, least: int = 10) -> float:
    """How far one content word (endings folded) stands above `free` of a text's content words: 0 for ordinary
    paragraphs (their most frequent content word is a tenth or so of them; under 0.18 in the writer's documents read),
    about 0.1 for a paragraph fixed on one word that shuffles the phrases around it ("The cycle of tides has the
    cycle of 10 hours. The cycle of how tides work."), which neither repeated pairs nor DRY catch. 0 under `least`
    content words."""
    from blockgen.document.cleanup import content_stems

    stems = [stem for word in words_of(text) for stem in content_stems(word)]
    if len(stems) < least:
        return 0.0
    return max(0.0, max(Counter(stems).values()) / len(stems) - free)


OPENING_WORDS = 3  # a sentence's frame: its first three words ("The economy is ...")
LOOPING_PAIRS = 0.3  # a text saying this share of its content-word pairs again loops on its own phrases


def sentence_opening(sentence: str, words: int = OPENING_WORDS) -> tuple[str, ...]:
    """A sentence's first `words` words, lowercased (fewer when it is shorter)."""
    return tuple(w.lower() for w in words_of(sentence)[:words])


def opener_repetition(text: str, words: int = OPENING_WORDS, least: int = 4) -> float:
    """The share of a text's sentences (after the first) that open with the same `words` words as an earlier one
    ("The economy is so complex... The economy is like a machine... The economy is very complex"; "The human
    perspective that..." twelve times): a loop on a sentence frame, whose varying tails keep repeated pairs and
    fixation low. Ordinary paragraphs reuse an opening now and then ("The tides..."); 0 under `least` sentences."""
    sentences = sentences_of(text)
    if len(sentences) < least:
        return 0.0
    seen, again = set(), 0
    for sentence in sentences:
        opening = sentence_opening(sentence, words)
        if len(opening) < words:
            continue
        again += opening in seen
        seen.add(opening)
    return again / (len(sentences) - 1)


def loops(text: str) -> bool:
    """Whether a paragraph loops: on a sentence frame (opener_repetition at least 0.5), on its own phrases (a third of
    its content-word pairs said again: self_repetition), or on one word (fixation)."""
    return opener_repetition(text) >= 0.5 or self_repetition(text) >= LOOPING_PAIRS or fixation(text) > 0.0


def echo_share(text: str, longest: int = 5) -> float:
    """The share of a text's sentences that only echo what it already said: at most `longest` words, every content
    word (endings folded) said before in it ("The moon, the tides, the sky. The sky, the skies. The stars, the stars.
    The stars." or "Tides work by gravity. ... Tides work. The tides work."): a loop of short sentences that repeats
    nouns rather than phrases (self_repetition's pairs miss it)."""
    from blockgen.document.cleanup import content_stems

    sentences = sentences_of(text)
    if len(sentences) < 2:
        return 0.0
    echoes, said = 0, set(content_stems(sentences[0]))
    for sentence in sentences[1:]:
        words = content_stems(sentence)
        echoes += len(words_of(sentence)) <= longest and bool(words) and words <= said
        said |= words
    return echoes / len(sentences)


def meta_per_1k_words(text: str) -> float:
    n = len(words_of(text))
    return 1000.0 * len(meta_phrases(text)) / n if n else 0.0


def repeated_ngrams(text: str, n: int = 8) -> float:
    """Share of the word n-grams that already occurred earlier in the text (0: nothing said twice)."""
    words = [w.lower() for w in words_of(text)]
    seen, repeats, total = set(), 0, 0
    for i in range(len(words) - n + 1):
        gram = tuple(words[i : i + n])
        total += 1
        repeats += gram in seen
        seen.add(gram)
    return repeats / total if total else 0.0


@torch.no_grad()
def judge_perplexities(lm, texts: list[str]) -> list[float]:
    """The model's perplexity of each text as plain text (no prompt): exp of the mean next-token loss; one forward
    pass for all of them (right-padded: a causal judge never looks at the padding). NaN for a text under 2 tokens."""
    rows = [lm.encode_text(t)[: lm.context_limit] for t in texts]
    scored = [i for i, r in enumerate(rows) if len(r) >= 2]
    out = [float("nan")] * len(rows)
    if not scored:
        return out
    longest = max(len(rows[i]) for i in scored)
    x = torch.zeros(len(scored), longest, dtype=torch.long)
    valid = torch.zeros(len(scored), longest - 1, dtype=torch.bool)
    for k, i in enumerate(scored):
        x[k, : len(rows[i])] = torch.tensor(rows[i])
        valid[k, : len(rows[i]) - 1] = True
    x = x.to(lm.device)
    logits = lm.model(x)[:, :-1].float()
    loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), x[:, 1:], reduction="none").cpu()
    for k, i in enumerate(scored):
        out[i] = math.exp(float(loss[k][valid[k]].mean()))
    return out


def judge_perplexity(lm, text: str) -> float:
    return judge_perplexities(lm, [text])[0]


def median_judge_perplexity(lm, paragraphs: list[str]) -> float:
    values = judge_perplexities(lm, [p for p in paragraphs if len(words_of(p)) >= 2])
    values = [v for v in values if not math.isnan(v)]
    return statistics.median(values) if values else float("nan")


def length_score(output_words: int, required_words: int) -> float:
    """S_l as LongWriter defines it: 100 at the required length, falling linearly (slower for overshoot)."""
    y, x = output_words, required_words
    if x <= 0:
        raise ValueError(f"required_words must be positive, got {x}")
    if y <= 0:
        return 0.0
    if y > x:
        return 100.0 * max(0.0, 1.0 - (y / x - 1.0) / 3.0)
    return 100.0 * max(0.0, 1.0 - (x / y - 1.0) / 2.0)


def distinct_n(text: str, n: int = 4) -> float:
    """Unique word n-grams over all word n-grams (1.0: no n-gram repeats)."""
    words = [w.lower() for w in _WORDS.findall(text)]
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 1.0


def repeated_paragraphs(paragraphs: list[str], embedder=None, threshold: float = 0.95) -> int:
    """Paragraphs that repeat an earlier one: the same words, or an embedding at least `threshold` similar."""
    from blockgen.loading.embedder import embed

    texts = [p for p in paragraphs if p.strip()]
    if len(texts) < 2:
        return 0
    vectors = embed(texts, embedder)
    keys = [" ".join(w.lower() for w in _WORDS.findall(t)) for t in texts]
    repeats = 0
    for i in range(1, len(texts)):
        if keys[i] in keys[:i] or float((vectors[:i] @ vectors[i]).max()) >= threshold:
            repeats += 1
    return repeats


def plan_adherence(section_texts: list[str], section_latent: torch.Tensor, embedder=None) -> float:
    """Share of written sections whose embedding (of the whole section, not only the part the sentence encoder
    reads at once) is nearest their own outline node."""
    from blockgen.loading.embedder import embed_long

    written = [(i, t) for i, t in enumerate(section_texts) if t.strip()]
    if not written:
        return 0.0
    vectors = embed_long([t for _, t in written], embedder)
    nearest = (vectors @ torch.nn.functional.normalize(section_latent.float(), dim=-1).T).argmax(-1).tolist()
    return sum(int(n == i) for (i, _), n in zip(written, nearest)) / len(written)


def quality(paragraphs: list[str], sections: list[str], section_latent, required_words: int, *, judge=None,
            embedder=None) -> dict:
    """All measures for a document given as its paragraphs and its per-section texts (the latter in outline order).
    judge: a loaded model scoring perplexity (skipped when None)."""
    text = "\n\n".join(paragraphs)
    words = len(words_of(text))
    return {
        "words": words,
        "required": required_words,
        "length_score": length_score(words, required_words),
        "judge_ppl": median_judge_perplexity(judge, paragraphs) if judge is not None else None,
        "run_on": run_on_share(text),
        "fragments": fragments(paragraphs),
        "meta_per_1k": meta_per_1k_words(text),
        "repeated_8grams": repeated_ngrams(text, 8),
        "distinct_4": distinct_n(text, 4),
        "looping": sum(loops(p) for p in paragraphs) / len(paragraphs) if paragraphs else 0.0,
        "repeated_paragraphs": repeated_paragraphs(paragraphs, embedder),
        "plan_adherence": plan_adherence(sections, torch.as_tensor(section_latent), embedder),
    }


def document_quality(doc, embedder=None, judge=None) -> dict:
    """All measures for a finished Document."""
    paragraphs = [p.text for p in doc.paragraphs]
    sections = [" ".join(p.text for p in doc.section_paragraphs(i)) for i in range(len(doc.outline.sections))]
    return quality(paragraphs, sections, torch.tensor(doc.outline.latent)[1:], doc.request.words, judge=judge,
                   embedder=embedder)
