"""The chaos soak, small: seeded schedules of streams, faults and triggers, on both backends.

The big one is ``benchmarks/soak.py`` (10,000 streams per backend). See ``tests/chaos.py``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.chaos import FAULTS, TRIGGERS, Step, emulator_for_chaos, run_schedule
from tether.testing import ResponsesEmulator


@pytest.fixture(scope="module")
def chaos_emulator() -> Iterator[ResponsesEmulator]:
    with emulator_for_chaos(seed=11) as emu:
        yield emu


async def test_every_fault_meets_every_trigger(chaos_emulator: ResponsesEmulator) -> None:
    """Every fault meets every trigger, all at once: no orphan, no hang, nothing swallowed or leaked."""
    schedule = [
        Step(fault, trigger, after)
        for (fault, trigger), after in zip(
            itertools.product(FAULTS, TRIGGERS), itertools.cycle(range(0, 12, 3))
        )
    ]
    async with chaos_emulator.async_client() as client:
        verdict = await run_schedule(chaos_emulator, client, schedule)
    assert verdict.ok, verdict


steps = st.builds(
    Step,
    st.sampled_from(FAULTS),
    st.sampled_from(TRIGGERS),
    st.integers(min_value=0, max_value=11),
)


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    derandomize=True,
)
@given(schedule=st.lists(steps, min_size=1, max_size=8))
async def test_random_schedules_keep_every_promise(
    chaos_emulator: ResponsesEmulator, schedule: list[Step]
) -> None:
    async with chaos_emulator.async_client() as client:
        verdict = await run_schedule(chaos_emulator, client, schedule)
    assert verdict.ok, verdict
