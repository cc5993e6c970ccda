"""A short `make chaos` run inside the test suite: random faults at random points, the invariant after each rotation.
The long run (500 rotations) is `make chaos`; its result is in the README."""

from __future__ import annotations

import os

import pytest

from rotator import chaos
from rotator.local.aws_stack import LocalAwsStack
from rotator.local.rig import PgCluster

pytestmark = pytest.mark.integration
SEED = int(os.environ.get("ROTATOR_CHAOS_SEED", "20261201"))


def test_twenty_random_faults_break_no_invariant(aws_stack: LocalAwsStack, healthy_cluster: PgCluster) -> None:
    report = chaos.run(aws_stack, healthy_cluster, rotations=20, seed=SEED)
    assert report.rotations == 20
    assert report.violations == [], report.violations
    # A real sample: most rotations met a fault, and some of those failed and were repaired
    assert sum(n for kind, n in report.kinds.items() if kind != "none") >= 12
    assert report.failed_first >= 3
