"""A test detector that can be made to hang: the SimpleDetector's scores, until a gate file exists.

Once the file named by ``SCATTERBIRD_TEST_GATE`` exists, every ``predict_proba`` call blocks for good, in
whichever process runs it (worker processes inherit the variable). A test opens the gate to get jobs that
are in flight and will never finish on their own, and checks that an interrupted batch still ends.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from simple_detector import SimpleDetector, train_simple_detector

GATE_ENV = "SCATTERBIRD_TEST_GATE"


class GatedDetector(SimpleDetector):
    """SimpleDetector whose scoring hangs once the gate file exists."""

    kind = "test-gated-logistic"

    def predict_proba(self, sequences):
        gate = os.environ.get(GATE_ENV)
        if gate and os.path.exists(gate):
            threading.Event().wait()  # never set: the job is stuck until its process is stopped
        return super().predict_proba(sequences)


def train_gated_detector(path: Path) -> GatedDetector:
    """The SimpleDetector of ``train_simple_detector``, saved as a GatedDetector at ``path``."""
    simple = train_simple_detector(path)
    gated = GatedDetector(C=simple.C)
    gated._set_state(*simple._get_state())
    gated.feature_config = simple.feature_config
    gated.save(path)
    return gated
