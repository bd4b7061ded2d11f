"""A test detector that can be made to hang: the SimpleDetector's scores for the first call only.

``SCATTERBIRD_TEST_GATE`` names an existing folder. The first ``predict_proba`` call, in whichever process
(worker processes inherit the variable), claims the folder's single ticket (an atomic ``mkdir``) and scores;
every later call blocks for good. A test gets exactly one finished job and jobs that are in flight and will
never finish on their own, whatever the machine's speed, and checks that an interrupted batch still ends.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from simple_detector import SimpleDetector, train_simple_detector

GATE_ENV = "SCATTERBIRD_TEST_GATE"


class GatedDetector(SimpleDetector):
    """SimpleDetector whose scoring hangs after the gate folder's one ticket is taken."""

    kind = "test-gated-logistic"

    def predict_proba(self, sequences):
        gate = os.environ.get(GATE_ENV)
        if gate:
            try:
                os.mkdir(Path(gate) / "ticket")  # atomic: exactly one call in all processes succeeds
            except FileExistsError:
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
