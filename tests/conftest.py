"""Fixtures shared across the test tree."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Run a module's tiny-model tests on one torch thread.

    With tiny matrices on a busy 2-core machine, OpenMP's second thread only adds waiting: one
    thread makes these tests several times faster. The previous setting is restored afterwards.
    Use it with ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
