"""Durable pull consumers, one per input partition, and fetching from them with a deadline."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import anyio
import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api
from nats.js.errors import APIError, FetchTimeoutError

from safeguards.adapters.bus.errors import BusUnavailable, ProvisioningConflict
from safeguards.core.subjects import partition_filter, stream_name

API_TIMEOUT_S = 5.0
DRAIN_TIMEOUT_S = 0.003  # a no-wait batch answers at once; this only bounds an empty answer


@dataclass(frozen=True, slots=True)
class ConsumerSettings:
    """Redelivery and flow limits of a partition consumer.

    ``backoff`` is the wait before each redelivery of an unacknowledged message (its first entry
    is the ack wait); the actors keep slow batches alive with ``in_progress``. A message that has
    been delivered ``max_deliver`` times is never delivered again, so the actors dead-letter it
    themselves on its last delivery.
    """

    max_ack_pending: int = 2048
    max_deliver: int = 20
    backoff: tuple[float, ...] = (5.0, 10.0, 20.0, 30.0, 60.0)
    max_waiting: int = 64
    durable_prefix: str = "actors"


def durable_name(region: str, partition: int, settings: ConsumerSettings) -> str:
    return f"{settings.durable_prefix}-{region}-p{partition}"


def partition_consumer_config(region: str, partition: int,
                              s: ConsumerSettings) -> api.ConsumerConfig:
    return api.ConsumerConfig(
        durable_name=durable_name(region, partition, s),
        description=f"account actors of region {region}, partition {partition}",
        filter_subject=partition_filter(region, partition),
        deliver_policy=api.DeliverPolicy.ALL,
        ack_policy=api.AckPolicy.EXPLICIT,
        ack_wait=s.backoff[0],
        backoff=list(s.backoff),
        max_deliver=s.max_deliver,
        max_ack_pending=s.max_ack_pending,
        max_waiting=s.max_waiting,
        replay_policy=api.ReplayPolicy.INSTANT,
    )


async def ensure_partition_consumer(js: JetStreamContext, region: str, partition: int,
                                    settings: ConsumerSettings | None = None) -> str:
    """Create (or converge) the durable consumer of one partition; returns its name."""
    s = settings or ConsumerSettings()
    config = partition_consumer_config(region, partition, s)
    stream = stream_name(region, "INPUTS")
    try:
        with anyio.fail_after(API_TIMEOUT_S):
            try:
                await js.add_consumer(stream, config)
            except APIError as exc:
                # An existing durable with other settings: adopt it when the filter matches, since
                # its delivery state (what is acked) is worth more than our preferred limits.
                info = await js.consumer_info(stream, config.durable_name or "")
                if info.config.filter_subject != config.filter_subject:
                    raise ProvisioningConflict(
                        f"consumer {config.durable_name} filters {info.config.filter_subject}: "
                        f"{exc.description}"
                    ) from None
    except TimeoutError:
        raise BusUnavailable(f"creating consumer {config.durable_name}: no answer") from None
    assert config.durable_name is not None
    return config.durable_name


class PartitionConsumer:
    """Fetches batches of one partition's durable consumer."""

    def __init__(self, js: JetStreamContext, region: str, partition: int,
                 settings: ConsumerSettings | None = None) -> None:
        self._js = js
        self.region = region
        self.partition = partition
        self.settings = settings or ConsumerSettings()
        self._sub: JetStreamContext.PullSubscription | None = None

    async def open(self) -> None:
        name = await ensure_partition_consumer(self._js, self.region, self.partition,
                                               self.settings)
        try:
            with anyio.fail_after(API_TIMEOUT_S):
                self._sub = await self._js.pull_subscribe_bind(
                    name, stream=stream_name(self.region, "INPUTS"),
                    pending_msgs_limit=4 * self.settings.max_ack_pending,
                )
        except TimeoutError:
            raise BusUnavailable(f"binding consumer {name}: no answer") from None

    async def fetch(self, batch: int, timeout_s: float) -> list[Msg]:
        """Up to ``batch`` messages, returned as soon as any are there; an empty list when none
        came within ``timeout_s``.

        nats-py's ``fetch(n)`` on an idle consumer long-polls and, once a first message arrives,
        keeps waiting for the other ``n - 1`` until its timeout: a lone signal would wait out
        the whole poll. So: take what is already there (a no-wait batch), else long-poll for
        one message, then take whatever came with it."""
        if self._sub is None:
            raise RuntimeError("PartitionConsumer.fetch before open")
        msgs = await self._fetch(batch, DRAIN_TIMEOUT_S)
        if msgs:
            return msgs
        first = await self._fetch(1, timeout_s)
        if not first or batch == 1:
            return first
        return first + await self._fetch(batch - 1, DRAIN_TIMEOUT_S)

    async def _fetch(self, batch: int, timeout_s: float) -> list[Msg]:
        assert self._sub is not None
        try:
            with anyio.fail_after(timeout_s + 2.0):
                msgs: list[Msg] = await self._sub.fetch(batch, timeout=timeout_s)
                return msgs
        except (FetchTimeoutError, nats.errors.TimeoutError):
            return []
        except TimeoutError:
            return []
        except (nats.errors.ConnectionClosedError, nats.errors.ConnectionReconnectingError,
                nats.errors.ConnectionDrainingError, nats.errors.NoRespondersError,
                nats.errors.SlowConsumerError) as exc:
            raise BusUnavailable(f"fetch from partition {self.partition}: "
                                 f"{type(exc).__name__}") from None
        except APIError as exc:
            raise BusUnavailable(f"fetch from partition {self.partition}: {exc.description}"
                                 ) from None

    async def close(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            with anyio.move_on_after(2.0):
                with contextlib.suppress(nats.errors.Error):
                    await sub.unsubscribe()
