"""The chaos soak, small: seeded schedules of streams, faults and triggers, on both backends.

The big one is ``benchmarks/soak.py`` (10,000 streams per backend). See ``tests/chaos.py``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.chaos import FAULTS, TRIGGERS, Step, emulator_for_chaos, run_schedule
from tether.testing import ResponsesEmulator

EXAMPLES = 12
# One schedule's run, bounded: every cleanup in it is bounded (grace, OPEN_BOUND), and the
# verdict judges each against its own bound; this only turns a hang into a failure of the
# example that hung. The test's timeout is the sum, not pytest's 60 s for the whole test:
# a machine several times slower than this one (a busy CI host) stays well inside it.
EXAMPLE_BOUND = 30.0


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
    with anyio.fail_after(EXAMPLE_BOUND):
        async with chaos_emulator.async_client() as client:
            verdict = await run_schedule(chaos_emulator, client, schedule)
    assert verdict.ok, verdict


steps = st.builds(
    Step,
    st.sampled_from(FAULTS),
    st.sampled_from(TRIGGERS),
    st.integers(min_value=0, max_value=11),
)


@pytest.mark.timeout(EXAMPLES * EXAMPLE_BOUND + 60)
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    derandomize=True,
)
@given(schedule=st.lists(steps, min_size=1, max_size=8))
async def test_random_schedules_keep_every_promise(
    chaos_emulator: ResponsesEmulator, schedule: list[Step]
) -> None:
    with anyio.fail_after(EXAMPLE_BOUND):
        async with chaos_emulator.async_client() as client:
            verdict = await run_schedule(chaos_emulator, client, schedule)
    assert verdict.ok, verdict
