"""Tests leave no process-global state behind: what one test changes, the next one does not see."""

import pathlib

import pytest

pytest_plugins = ["pytester"]

CONFTEST = pathlib.Path(__file__).with_name("conftest.py")

# Two tests in one session, in this order: the first leaves a current mmengine scope behind as an in-process Runner
# does (Runner.__init__ calls DefaultScope.get_instance(experiment_name, scope_name="mmengine")), the second checks
# that it is gone and that an mmseg head still builds outside any scope.
LEAKY_PAIR = """
from mmengine.registry import DefaultScope


def test_a_runner_makes_its_scope_current():
    DefaultScope.get_instance("vitzoo-leak-check", scope_name="mmengine")
    assert DefaultScope.get_current_instance().scope_name == "mmengine"


def test_b_does_not_see_it():
    assert not DefaultScope.check_instance_created("vitzoo-leak-check")
    from vitzoo.mm import VWFormerHead

    VWFormerHead([8, 16, 32, 64], 64, num_classes=7, norm_cfg=dict(type="BN"))  # builds its loss via mmseg
"""


def test_mmengine_scope_of_one_test_does_not_reach_the_next(pytester):
    pytest.importorskip("mmseg", reason="the mm extra is not installed")
    import vitzoo.mm  # noqa: F401  (op stand-ins before mmseg imports mmcv.ops)

    pytester.makeconftest(CONFTEST.read_text())
    pytester.makepyfile(test_pair=LEAKY_PAIR)
    result = pytester.runpytest_inprocess("-p", "no:randomly", "-p", "no:cacheprovider", "-q")
    result.assert_outcomes(passed=2)
