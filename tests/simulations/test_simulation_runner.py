"""The simulation's client: a 529 overloaded_error (a probation screening the classifier was too
busy for) is sent again, as the official SDK does by default; other refusals are not."""

from __future__ import annotations

import json

import anthropic
import httpx2
import pytest

from safeguards.simulations import runner
from safeguards.simulations.plan import PlannedRequest

REQ = PlannedRequest("p", "benign", "acct-1", "us", 0, 0.0, "hello", False, False, False)
OK = {"id": "msg_1", "type": "message", "role": "assistant", "model": "m",
      "content": [{"type": "text", "text": "hi"}], "stop_reason": "end_turn",
      "stop_sequence": None, "usage": {"input_tokens": 1, "output_tokens": 1}}


def _client(answers: list[tuple[int, str]]) -> tuple[anthropic.AsyncAnthropic, list[int]]:
    sent: list[int] = []

    def answer(request: httpx2.Request) -> httpx2.Response:
        status, error_type = answers[min(len(sent), len(answers) - 1)]
        sent.append(status)
        if status == 200:
            return httpx2.Response(200, json=OK, headers={"x-safeguards-action": "allow"})
        body = {"type": "error", "error": {"type": error_type, "message": "no"}}
        return httpx2.Response(status, content=json.dumps(body),
                               headers={"content-type": "application/json"})

    client = anthropic.AsyncAnthropic(
        base_url="http://proxy.test", api_key="k", max_retries=0,
        http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(answer)))
    return client, sent


@pytest.fixture(autouse=True)
def no_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "OVERLOADED_RETRY_AFTER_S", 0.0)


async def test_a_529_is_sent_again_and_the_retry_decides() -> None:
    client, sent = _client([(529, "overloaded_error"), (200, "")])
    (status, outcome, _, _, action), attempts = await runner.send_retrying_overloaded(client, REQ)
    assert (status, outcome, action, attempts, sent) == (200, "served", "allow", 2, [529, 200])


async def test_retries_stop_after_the_sdks_two() -> None:
    client, sent = _client([(529, "overloaded_error")])
    (status, outcome, _, error_type, _), attempts = await runner.send_retrying_overloaded(
        client, REQ)
    assert (status, outcome, error_type, attempts) == (529, "blocked", "overloaded_error", 3)
    assert len(sent) == 1 + runner.OVERLOADED_RETRIES


@pytest.mark.parametrize(("status", "error_type", "outcome"), [
    (403, "permission_error", "blocked"), (429, "rate_limit_error", "throttled")])
async def test_a_refusal_or_a_throttle_is_not_retried(status: int, error_type: str,
                                                     outcome: str) -> None:
    client, sent = _client([(status, error_type), (200, "")])
    (got, got_outcome, _, _, _), attempts = await runner.send_retrying_overloaded(client, REQ)
    assert (got, got_outcome, attempts, sent) == (status, outcome, 1, [status])
