"""Fixtures shared by the discovery tests."""

from __future__ import annotations

import pytest

from beethoven.discovery.seekchat import ChannelFactory


@pytest.fixture
def channel_factory() -> ChannelFactory | None:
    """The SeekChat channel factory the memory-network tests inject.

    ``None`` selects the real `beethoven.wire.framing.FrameChannel`; the hook stays so
    a test can swap in an instrumented channel.
    """
    return None
