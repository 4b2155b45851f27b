"""Making sure of a partition's consumer while JetStream has no meta leader (right after a
network partition heals, when a dead node's partitions are being taken over): an answer a retry
can help is ``BusUnavailable``, which the partition rides through, never an error that ends the
node."""

from __future__ import annotations

from typing import Any, cast

import nats.errors
import pytest
from nats.js import JetStreamContext
from nats.js.errors import APIError, ServiceUnavailableError

from safeguards.adapters.bus.consumers import ensure_partition_consumer
from safeguards.adapters.bus.errors import BusUnavailable, ProvisioningConflict


class _JetStream:
    """Answers a consumer's create and info as a cluster may."""

    def __init__(self, create: Exception, info: Exception | None = None) -> None:
        self.create, self.info = create, info

    async def add_consumer(self, *args: Any, **kwargs: Any) -> None:
        raise self.create

    async def consumer_info(self, *args: Any, **kwargs: Any) -> None:
        if self.info is not None:
            raise self.info


def _unavailable() -> APIError:
    return ServiceUnavailableError(code=503, err_code=10008,
                                   description="JetStream system temporarily unavailable")


@pytest.mark.parametrize("js", [
    _JetStream(_unavailable()),  # the create itself
    _JetStream(nats.errors.NoRespondersError()),
    # a create refused otherwise, then the info read to adopt the durable
    _JetStream(APIError(code=400, err_code=10148, description="consumer already exists"),
               info=_unavailable()),
])
async def test_an_answer_a_retry_can_help_is_bus_unavailable(js: _JetStream) -> None:
    with pytest.raises(BusUnavailable):
        await ensure_partition_consumer(cast(JetStreamContext, js), "r1", 0, timeout_s=1.0)


async def test_a_conflicting_durable_is_still_a_conflict() -> None:
    class _Other(_JetStream):
        async def consumer_info(self, *args: Any, **kwargs: Any) -> Any:
            class Info:
                class config:  # nats-py's shape: info.config.filter_subject
                    filter_subject = "sg.r1.acct.9.>"
            return Info

    js = _Other(APIError(code=400, err_code=10148, description="consumer already exists"))
    with pytest.raises(ProvisioningConflict):
        await ensure_partition_consumer(cast(JetStreamContext, js), "r1", 0, timeout_s=1.0)
