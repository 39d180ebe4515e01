"""The timing phase's block schedule (bench.latency.add_blocks_until_sure), on fake timers and a fake clock."""

from types import SimpleNamespace

from bench.study.timing_phase import add_blocks_until_sure


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeTimer:
    """Two candidates, 'a' and 'b'; a block costs ``cost`` seconds of the fake clock. ``sure``: a's block medians equal
    b's (a ratio of exactly 1 in every resample); otherwise a alternates 1, 2 against b's 1 (an interval 1 to 2)."""

    def __init__(self, clock: FakeClock, cost: float, sure: bool):
        self.clock, self.cost, self.sure = clock, cost, sure
        self.block_busy = []
        self.medians = {"a": [], "b": []}

    def add_block(self):
        self.clock.now += self.cost
        index = len(self.block_busy)
        self.block_busy.append(False)
        self.medians["a"].append(1.0 if self.sure or index % 2 == 0 else 2.0)
        self.medians["b"].append(1.0)

    def timings(self):
        return {name: SimpleNamespace(block_medians=list(values)) for name, values in self.medians.items()}


PAIR = [("a", "b")]


def test_unsure_groups_get_equal_blocks_whatever_a_block_costs():
    clock = FakeClock()
    cheap, costly = FakeTimer(clock, 1.0, sure=False), FakeTimer(clock, 8.0, sure=False)
    # 90 s: two first blocks of each (18 s), then rounds of one block each (9 s) until the next would not fit
    counts = add_blocks_until_sure([cheap, costly], [PAIR, PAIR], 2, 100, 0.03, 90.0, clock=clock)
    # an equal split of the time (45 s each) would have given 45 and 5 blocks
    assert counts == [10, 10]
    assert clock.now == 90.0


def test_a_sure_group_stops_at_its_first_blocks_and_max_blocks_caps_the_rest():
    clock = FakeClock()
    sure, unsure, no_pairs = (
        FakeTimer(clock, 1.0, sure=True),
        FakeTimer(clock, 1.0, sure=False),
        FakeTimer(clock, 1.0, sure=False),
    )
    counts = add_blocks_until_sure([sure, unsure, no_pairs], [PAIR, PAIR, []], 3, 7, 0.03, 1e9, clock=clock)
    assert counts == [3, 7, 3]


def test_the_first_blocks_are_taken_even_past_the_deadline():
    clock = FakeClock()
    timers = [FakeTimer(clock, 5.0, sure=False) for _ in range(2)]
    assert add_blocks_until_sure(timers, [PAIR, PAIR], 2, 40, 0.03, 1.0, clock=clock) == [2, 2]


def test_a_costly_block_that_no_longer_fits_leaves_the_time_to_a_cheap_one():
    clock = FakeClock()
    cheap, costly = FakeTimer(clock, 1.0, sure=False), FakeTimer(clock, 8.0, sure=False)
    # after the first blocks (18 s) 5 s are left: too little for an 8 s block, enough for five 1 s blocks
    assert add_blocks_until_sure([cheap, costly], [PAIR, PAIR], 2, 100, 0.03, 23.0, clock=clock) == [7, 2]


def test_a_group_whose_own_ratios_are_sure_gets_blocks_while_a_ratio_to_another_group_is_not():
    clock = FakeClock()
    steady = FakeTimer(clock, 1.0, sure=True)
    assert add_blocks_until_sure([steady], [PAIR], 3, 7, 0.03, 1e9, clock=clock, unsure_elsewhere=lambda: {0}) == [7]
    again = FakeTimer(clock, 1.0, sure=True)
    assert add_blocks_until_sure([again], [PAIR], 3, 7, 0.03, 1e9, clock=clock, unsure_elsewhere=lambda: set()) == [3]


class FixedTimer:
    """A timer whose block medians are given: ``{key: [ms, ...]}``."""

    def __init__(self, medians: dict):
        self.medians = medians

    def timings(self):
        return {
            key: SimpleNamespace(block_medians=values, median_ms=sorted(values)[len(values) // 2])
            for key, values in self.medians.items()
        }


def _group(runtime: str, medians: dict, batch: int = 1):
    members = [SimpleNamespace(key=key, label=f"model {key}") for key in medians]
    return SimpleNamespace(runtime=runtime, batch=batch, device="cpu", members=members, timer=FixedTimer(medians))


def test_summary_ratios_between_runtimes_name_both_groups_until_they_are_known():
    """A model's fastest runtime (OpenVINO) over the reference's fastest (ONNX Runtime) spans two groups: noisy blocks
    leave it unsure in both, steady ones do not; a quantized model's ratio is its int8 group's."""
    from bench.study.timing_phase import unsure_between_groups

    noisy = [1.0, 1.4] * 4
    groups = [
        _group("onnxruntime", {"ref": [2.0] * 8, "m": [3.0] * 8}),
        _group("openvino", {"ref": [2.5] * 8, "m": noisy}),
        _group("onnxruntime", {"ref": [16.0] * 8, "m": [12.0] * 8}, batch=8),
    ]
    unsure = unsure_between_groups(groups, "ref", set(), 0.03)
    assert set(unsure) == {0, 1}
    assert unsure[1].startswith("openvino / onnxruntime, batch 1: model m / model ref +-")
    groups[1] = _group("openvino", {"ref": [2.5] * 8, "m": [1.2] * 8})
    assert unsure_between_groups(groups, "ref", set(), 0.03) == {}
    int8 = _group("onnxruntime_int8", {"q": noisy})
    assert set(unsure_between_groups([groups[0], int8], "ref", {"q"}, 0.03)) == {0, 1}
    # the summary's int8 column of the reference itself: its int8 group over its fastest exact one
    own_int8 = _group("onnxruntime_int8", {"ref": noisy})
    unsure = unsure_between_groups([_group("onnxruntime", {"ref": [2.0] * 8}), own_int8], "ref", set(), 0.03)
    assert set(unsure) == {0, 1} and "model ref / model ref" in unsure[1]
