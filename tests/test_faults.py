"""Every fault of ``harness.faults`` injected into a real run, one test each.

A damaged cache must be rebuilt to exactly the clean results, a wrong option refused
in one line before any work, a bad file skipped with its reason, a killed run
resumed, and two processes on one cache must both succeed and agree.
"""

from __future__ import annotations

import pytest

from harness import faults


@pytest.fixture(scope="module")
def lab(tmp_path_factory, demo_photos):
    return faults.prepare(tmp_path_factory.mktemp("faults"), demo_photos)


def assert_survived(outcome: faults.Outcome) -> None:
    assert outcome.survived and not outcome.wrong_result and not outcome.traceback, outcome


@pytest.mark.parametrize("name", list(faults.CACHE_FAULTS))
def test_a_damaged_cache_is_rebuilt_to_the_clean_results(lab, name):
    assert_survived(faults.cache_fault(lab, name))


@pytest.mark.parametrize("name", list(faults.OPTION_FAULTS))
def test_a_wrong_option_is_one_line_before_any_work(lab, name):
    assert_survived(faults.option_fault(lab, name))


@pytest.mark.parametrize("name", list(faults.DATASET_FAULTS))
def test_a_bad_file_is_skipped_with_its_reason(lab, name):
    assert_survived(faults.dataset_fault(lab, name))


def test_an_in_place_edit_is_not_served_from_the_cache(lab):
    assert_survived(faults.in_place_edit(lab))


def test_kill_during_copies_then_rerun_equals_a_clean_run(lab):
    assert_survived(faults.kill_during(lab, "copies"))


def test_two_processes_started_one_second_apart_both_succeed_and_agree(lab):
    assert_survived(faults.concurrent_runs(lab))


@pytest.fixture(scope="module")
def cnn_reference(lab):
    return faults.cnn_reference(lab)


def test_kill_during_encoding_then_rerun_equals_a_clean_run(lab, cnn_reference):
    assert_survived(faults.kill_during(lab, "embed", faults.CNN_ARGS, cnn_reference))


def test_two_processes_sharing_a_cnn_build_both_succeed_and_agree(lab, cnn_reference):
    assert_survived(faults.concurrent_runs(lab, faults.CNN_ARGS, cnn_reference))
