"""The ext_proc route table's path normalisation, for any path hypothesis can spell: one
spelling per path, never above the root, and every spelling of a route lands on that route."""

from __future__ import annotations

import posixpath
import string
from urllib.parse import unquote

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from safeguards.adapters.csp.routes import Denied, Route, Target, match, normalise_path

# what paths are made of, weighted towards the characters normalisation acts on
PATH_CHARS = st.one_of(st.sampled_from([*"/./%2eEfF6dD5", "%2e", "%2F", "..", "//"]),
                       st.characters(exclude_characters="?#"))
PATHS = st.lists(PATH_CHARS, max_size=40).map("".join)
JUNK = st.text(string.ascii_letters + string.digits + "-_~", min_size=1, max_size=8)


@st.composite
def spellings(draw: st.DrawFn, path: str) -> tuple[str, str]:
    """A spelling of ``path`` an origin server may take for it, and its query string."""
    out = draw(st.sampled_from(["", "/..", "/../..", "/%2e%2E"]))
    for segment in path.strip("/").split("/"):
        out += "/" * draw(st.integers(1, 3))
        for _ in range(draw(st.integers(0, 2))):  # detours that come back
            if draw(st.booleans()):
                out += draw(st.sampled_from([".", "%2e", "%2E"])) + "/" * draw(st.integers(1, 2))
            else:
                back = draw(st.sampled_from(["..", "%2e%2e", ".%2E", "%2E."]))
                out += f"{draw(JUNK)}/{back}" + "/" * draw(st.integers(1, 2))
        out += "".join(draw(st.sampled_from([c, f"%{ord(c):02x}", f"%{ord(c):02X}"]))
                       for c in segment)
    out += draw(st.sampled_from(["", "/", "//", "/.", "/./", "/x/.."]))
    query = draw(st.sampled_from(["", "?beta=true", "?a=%2F&b=../..", "?"]))
    return out + query + draw(st.sampled_from(["", "#frag"])), query


def segments(path: str) -> list[str]:
    assert path.startswith("/")
    return path[1:].split("/") if path != "/" else []


@settings(max_examples=500, deadline=None)
@given(path=PATHS)
@example(path="%%36d")  # a stray % must not make a triplet on the second pass
@example(path="/%2e%2e/%2E./..%2f")
def test_normalising_is_idempotent_and_stays_under_the_root(path: str) -> None:
    once = normalise_path(path)
    assert normalise_path(once) == once
    assert all(s not in ("", ".", "..") for s in segments(once))
    # a climb at the root goes nowhere: nothing is ever above it
    assert normalise_path("/../../" + path) == normalise_path("/" + path) == once


@settings(max_examples=300, deadline=None)
@given(data=st.data(), route=st.sampled_from([
    ("/v1/messages", Route.MESSAGES), ("/v1/messages/count_tokens", Route.COUNT_TOKENS)]))
def test_every_spelling_of_a_route_lands_on_it(data: st.DataObject,
                                               route: tuple[str, Route]) -> None:
    path, kind = route
    spelling, query = data.draw(spellings(path))
    target = match("POST", spelling)
    assert isinstance(target, Target)
    assert (target.route, target.path) == (kind, path)
    assert (target.forward or spelling) == path + query  # upstream sees what was checked


ANY_TARGET = st.one_of(PATHS, *(spellings(p).map(lambda s: s[0]) for p in (
    "/v1/messages", "/v1/messages/count_tokens", "/v1/models", "/v1/models/claude-x")))


@settings(max_examples=500, deadline=None)
@given(raw=ANY_TARGET, method=st.sampled_from(["POST", "GET"]))
def test_what_passes_is_what_any_origin_would_serve(raw: str, method: str) -> None:
    """An origin that decodes every triplet and resolves dot segments (more liberal than any
    real one) reads a forwarded path as the route it was matched to."""
    target = match(method, raw)
    if isinstance(target, Denied):
        return
    forwarded = (target.forward or raw).partition("?")[0]
    assert forwarded == target.path
    assert posixpath.normpath(unquote(forwarded)) == target.path


@pytest.mark.parametrize(("method", "path", "route"), [
    ("POST", "/v1/messages?beta=true", Route.MESSAGES),
    ("POST", "/v1/messages/", Route.MESSAGES),
    ("POST", "//v1/messages", Route.MESSAGES),
    ("POST", "/v1/./messages", Route.MESSAGES),
    ("POST", "/v1/%6dessages", Route.MESSAGES),
    ("POST", "/v1/messages/count_tokens/..", Route.MESSAGES),  # climbing out lands on the gate
    ("POST", "/v1/models/../messages", Route.MESSAGES),
    ("POST", "/v1/messages/count_tokens", Route.COUNT_TOKENS),
    ("GET", "/v1/models", Route.MODELS),
    ("GET", "/v1/models/claude-sonnet-4-5", Route.MODELS),
])
def test_known_routes(method: str, path: str, route: Route) -> None:
    target = match(method, path)
    assert isinstance(target, Target) and target.route is route


@pytest.mark.parametrize(("method", "path", "status"), [
    ("POST", "/v1/messages/batches", 404),
    ("POST", "/v1/messages/batches/", 404),
    ("POST", "/V1/messages", 404),  # Anthropic's paths are case-sensitive
    ("POST", "/v1/Messages", 404),
    ("POST", "/v1%2Fmessages", 404),  # an encoded slash is not a separator
    ("POST", "/v1/messages%00", 404),
    ("POST", "/v1/messages;x=1", 404),
    ("POST", "/v1/complete", 404),
    ("POST", "/v1/models/..", 404),
    ("GET", "/metrics", 404),
    ("GET", "/healthz", 404),
    ("POST", "", 404),
    ("OPTIONS", "*", 404),
    ("GET", "/v1/messages", 405),
    ("post", "/v1/messages", 405),
    ("PUT", "/v1/messages/count_tokens", 405),
    ("POST", "/v1/models", 405),
    ("DELETE", "/v1/models/m", 405),
])
def test_everything_else_is_denied(method: str, path: str, status: int) -> None:
    denied = match(method, path)
    assert isinstance(denied, Denied) and denied.status == status
    assert (denied.allow is not None) == (status == 405)
