"""PasswordService: argon2id hashing, constant-work verification, rehash detection."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator

import pytest

from authql.services.passwords import PasswordService, Verification
from authql.settings import Settings

PASSWORD = "correct horse battery"


def _service(time_cost: int = 1, memory_kib: int = 8, parallelism: int = 1) -> PasswordService:
    return PasswordService(time_cost=time_cost, memory_kib=memory_kib, parallelism=parallelism)


@pytest.fixture
def cheap() -> Iterator[PasswordService]:
    """A service with the cheapest argon2 parameters (tests run in microseconds)."""
    service = _service()
    yield service
    service.close()


@pytest.fixture
def costly() -> Iterator[PasswordService]:
    """A service whose hashes take tens of milliseconds, so timing is measurable."""
    service = _service(time_cost=2, memory_kib=16_384)
    yield service
    service.close()


def _phc_parameters(phc: str) -> dict[str, int]:
    """The m/t/p parameters of an argon2 PHC string ``$argon2id$v=19$m=..,t=..,p=..$..``."""
    _, variant, _version, params, _salt, _digest = phc.split("$")
    assert variant == "argon2id"
    return {key: int(value) for key, value in (item.split("=") for item in params.split(","))}


async def test_hash_is_an_argon2id_phc_string_with_the_configured_parameters() -> None:
    """The stored form is an argon2id PHC string carrying exactly the configured m, t and p."""
    service = _service(time_cost=2, memory_kib=64, parallelism=2)
    try:
        phc = await service.hash(PASSWORD)
    finally:
        service.close()
    assert phc.startswith("$argon2id$v=19$")
    assert _phc_parameters(phc) == {"m": 64, "t": 2, "p": 2}
    assert PASSWORD not in phc


async def test_hashing_the_same_password_twice_uses_fresh_salts(cheap: PasswordService) -> None:
    """Two hashes of one password differ (random salt), and both verify."""
    first, second = await cheap.hash(PASSWORD), await cheap.hash(PASSWORD)
    assert first != second
    assert (await cheap.verify(first, PASSWORD)).ok
    assert (await cheap.verify(second, PASSWORD)).ok


async def test_verify_accepts_the_right_password(cheap: PasswordService) -> None:
    """The right password verifies, and a hash with current parameters needs no rehash."""
    phc = await cheap.hash(PASSWORD)
    assert await cheap.verify(phc, PASSWORD) == Verification(ok=True, needs_rehash=False)


async def test_verify_mismatch_is_a_result_not_an_exception(cheap: PasswordService) -> None:
    """A wrong password gives Verification(ok=False); nothing is raised."""
    phc = await cheap.hash(PASSWORD)
    assert await cheap.verify(phc, "wrong password!") == Verification(ok=False)
    assert await cheap.verify(phc, "") == Verification(ok=False)


@pytest.mark.parametrize(
    "stored", ["", "not a hash", "$2b$12$abcdefghijklmnopqrstuv", "$argon2id$"]
)
async def test_verify_with_a_malformed_hash_fails_without_raising(
    cheap: PasswordService, stored: str
) -> None:
    """A corrupt or foreign stored hash is a failed verification, never an exception."""
    assert (await cheap.verify(stored, PASSWORD)).ok is False


async def test_verify_without_a_hash_fails(cheap: PasswordService) -> None:
    """A missing hash (unknown account, passwordless account) never verifies, whatever the input."""
    assert await cheap.verify(None, PASSWORD) == Verification(ok=False)
    assert await cheap.verify(None, "") == Verification(ok=False)


async def test_verify_without_a_hash_costs_as_much_as_a_real_verify(
    costly: PasswordService,
) -> None:
    """Unknown accounts pay one full argon2 verify too, so timing cannot reveal existence."""
    real_hash = await costly.hash(PASSWORD)

    async def seconds(stored: str | None) -> float:
        started = time.perf_counter()
        result = await costly.verify(stored, "wrong password!")
        assert result.ok is False
        return time.perf_counter() - started

    await costly.verify(None, "warm-up")  # the first call starts a worker thread
    # Interleaved, and the fastest of each kept: other load on the machine only ever adds
    # time, so the minimum is the cost of the work itself.
    timings: dict[str, list[float]] = {"missing": [], "mismatch": []}
    for _ in range(7):
        timings["missing"].append(await seconds(None))
        timings["mismatch"].append(await seconds(real_hash))
    missing, mismatch = min(timings["missing"]), min(timings["mismatch"])
    assert mismatch > 0.005, f"parameters too cheap to compare ({mismatch * 1000:.1f} ms)"
    assert 0.5 <= missing / mismatch <= 2.0, (
        f"verify(None) took {missing * 1000:.1f} ms, a real verify {mismatch * 1000:.1f} ms"
    )


async def test_needs_rehash_when_parameters_change(cheap: PasswordService) -> None:
    """A hash made with other parameters verifies but asks to be re-hashed."""
    stronger = _service(time_cost=2)
    try:
        old_hash = await cheap.hash(PASSWORD)
        assert await stronger.verify(old_hash, PASSWORD) == Verification(ok=True, needs_rehash=True)
        new_hash = await stronger.hash(PASSWORD)
        assert await stronger.verify(new_hash, PASSWORD) == Verification(
            ok=True, needs_rehash=False
        )
    finally:
        stronger.close()


async def test_a_wrong_password_never_asks_for_a_rehash(cheap: PasswordService) -> None:
    """needs_rehash is only reported for a successful verification."""
    stronger = _service(time_cost=2)
    try:
        old_hash = await cheap.hash(PASSWORD)
        assert await stronger.verify(old_hash, "wrong password!") == Verification(ok=False)
    finally:
        stronger.close()


async def test_default_parameters_are_argon2id_m65536_t3_p4() -> None:
    """With the shipped defaults a hash is argon2id at m=65536 KiB, t=3, p=4 (OWASP-grade)."""
    defaults = Settings()
    service = PasswordService(
        time_cost=defaults.argon2_time_cost,
        memory_kib=defaults.argon2_memory_kib,
        parallelism=defaults.argon2_parallelism,
    )
    try:
        phc = await service.hash(PASSWORD)  # ~250 ms: hash once only
    finally:
        service.close()
    assert phc.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert _phc_parameters(phc) == {"m": 65_536, "t": 3, "p": 4}


async def test_hashing_does_not_block_the_event_loop() -> None:
    """While a costly hash runs, a task ticking every 10 ms keeps ticking."""
    service = _service(time_cost=2, memory_kib=65_536)
    ticks: list[float] = []

    async def ticker() -> None:
        while True:
            ticks.append(time.perf_counter())
            await asyncio.sleep(0.01)

    task = asyncio.create_task(ticker())
    try:
        await asyncio.sleep(0)  # let the ticker start
        started = time.perf_counter()
        await service.hash(PASSWORD)
        finished = time.perf_counter()
    finally:
        task.cancel()
        service.close()
    duration = finished - started
    during = [tick for tick in ticks if started <= tick <= finished]
    assert duration > 0.05, f"hash too fast ({duration * 1000:.1f} ms) to show anything"
    assert len(during) >= 3, f"{len(during)} ticks during a {duration * 1000:.0f} ms hash"
    points = [started, *during, finished]
    longest_gap = max(later - earlier for earlier, later in itertools.pairwise(points))
    assert longest_gap < duration / 2, (
        f"the loop stalled {longest_gap * 1000:.0f} ms during a {duration * 1000:.0f} ms hash"
    )
