"""Benign asks that carry machine identifiers (:func:`identifier_asks`): commit ids, digests,
UUIDs, test API keys, order references, and base64 or hex payloads of benign text.

Injection corpora are full of random-looking tokens (canaries, encoded payloads), so a model that
never saw them in benign text learns that a hex run or a base64 blob is evidence of an attack;
2026.12.11 struck 7 % of written benign asks bearing a hash or key and 92 % of benign base64
decode asks. The templates are in ``banks/identifiers.json``; the tokens are made from the seed.
"""

from __future__ import annotations

import base64
import json
import random
import string

from safeguards.adapters.classifier_training.generated.benign import _PASSAGES
from safeguards.adapters.classifier_training.generated.families import Family, _split
from safeguards.adapters.classifier_training.generated.word_banks import bank, read_banks
from safeguards.adapters.classifier_training.sources import Example

_BANKS = read_banks("identifiers")
_TEMPLATES = bank(_BANKS["templates"], "identifiers.templates")
_KEY_PREFIXES = bank(_BANKS["key_prefixes"], "identifiers.key_prefixes")
_REF_PREFIXES = bank(_BANKS["ref_prefixes"], "identifiers.ref_prefixes")
_ALNUM = string.ascii_letters + string.digits


def _hex(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789abcdef") for _ in range(n))


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _tokens(rng: random.Random, passages: list[str]) -> dict[str, str]:
    words = rng.choice(passages).split()
    start = rng.randrange(max(1, len(words) - 6))
    snippet = " ".join(words[start:start + rng.randint(3, 12)]).encode()
    claims = {"sub": f"user-{rng.randint(1, 99999)}", "iat": 1700000000 + rng.randint(0, 10**7)}
    return {
        "hex": _hex(rng, rng.choice((32, 40, 64))),
        "sha": _hex(rng, rng.choice((7, 8, 12, 40))),
        "uuid": "-".join(_hex(rng, n) for n in (8, 4, 4, 4, 12)),
        "key": rng.choice(_KEY_PREFIXES) + "".join(rng.choice(_ALNUM)
                                                   for _ in range(rng.randint(16, 32))),
        "b64": base64.b64encode(snippet).decode(),
        "hexbytes": snippet[:16].hex(),
        "jwt": ".".join((_b64url(b'{"alg":"HS256","typ":"JWT"}'),
                         _b64url(json.dumps(claims).encode()), _b64url(rng.randbytes(32)))),
        "ref": rng.choice(_REF_PREFIXES) + (_hex(rng, 8).upper() if rng.random() < 0.5
                                            else str(rng.randint(10000, 9999999))),
    }


def identifier_asks(n: int, *, seed: int, family: Family) -> list[Example]:
    """``n`` benign requests (no labels), each carrying one or two machine identifiers."""
    rng = random.Random(seed)
    templates = _split(_TEMPLATES, family)
    passages = _split(_PASSAGES, family)
    out = []
    for _ in range(n):
        text = rng.choice(templates).format(**_tokens(rng, passages))
        out.append(Example(text, frozenset(), "generated:benign:identifiers",
                           f"gi:{family}:{text[:60]}"))
    return out
