"""The bound on work after acks: a few at once, a bounded queue, "busy" beyond it."""

from __future__ import annotations

import asyncio

import pytest

from bot import blocks
from bot.domain import Busy
from bot.listeners.common import Work


def test_work_runs_a_few_at_once_queues_a_bounded_number_and_refuses_the_rest():
    async def scenario() -> None:
        work = Work(slots=2, waiting=3)
        release = asyncio.Event()
        running, most, done = 0, 0, []

        async def job(n: int) -> None:
            nonlocal running, most
            async with work:
                running += 1
                most = max(most, running)
                await release.wait()
                running -= 1
                done.append(n)

        jobs = [asyncio.create_task(job(n)) for n in range(5)]  # 2 running, 3 waiting
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        with pytest.raises(Busy):
            await work.__aenter__()  # a sixth: the queue is full
        release.set()
        await asyncio.gather(*jobs)
        assert most == 2 and sorted(done) == [0, 1, 2, 3, 4]
        async with work:  # and the bound frees up again
            pass

    asyncio.run(scenario())


def test_a_refused_request_is_told_why_in_plain_words():
    message = blocks.failure(Busy(), "acme")
    shown = message.text + str(message.blocks)
    assert "The bot is busy" in shown and "Try again in a minute" in shown
