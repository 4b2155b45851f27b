"""A front end's stop: the enforcement feed deletes its consumer over a connection still open.

The link closing the NATS connection under the feed's delete request left that request
unanswered, so every stop sat out the feed's whole clean-up timeout and left the consumer for
the server to expire."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

from csp_testkit import Region, RunningProxy

from safeguards.adapters.csp.front_end_config import FrontEndConfig
from safeguards.core.subjects import stream_name

ProxyEnv = Callable[..., contextlib.AbstractAsyncContextManager[RunningProxy]]


async def test_a_proxy_stops_with_its_feed_consumer_deleted_not_timed_out(
    proxy_env: ProxyEnv, region: Region
) -> None:
    timeout_s = FrontEndConfig(region=region.name).feed_cleanup_timeout_s  # production's
    stream = stream_name(region.name, "ENFORCE")
    js = region.nc.jetstream()
    async with proxy_env(feed_cleanup_timeout_s=timeout_s) as running:
        feed = running.proxy.feed
        assert feed is not None
        assert (await js.stream_info(stream)).state.consumer_count == 1  # the feed's
        stopping = time.monotonic()
    took_s = time.monotonic() - stopping
    assert feed.cleanup_timeouts == 0  # the delete was answered
    assert (await js.consumers_info(stream)) == []
    assert took_s < timeout_s  # the clean-up's timeout was not waited out
