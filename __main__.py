"""The command line's entry point: ``python -m scatterbird`` and the installed ``scatterbird`` command.

Before anything loads torch, idle OpenMP threads are told to sleep instead of spinning
(``OMP_WAIT_POLICY=PASSIVE`` unless the user set a policy; see :mod:`scatterbird.pipeline.threads`): the
runtime reads the policy once, when it loads, and :mod:`scatterbird.cli` imports torch. The CPU counters
are read too, so that the default thread count can leave out the cores other processes keep busy while the
command starts.
"""

import sys

from scatterbird.pipeline.threads import prefer_passive_wait, start_load_sample

prefer_passive_wait()
start_load_sample()  # the default --threads leaves out the cores other processes keep busy meanwhile

from scatterbird.cli import main  # noqa: E402  (after the wait policy is in the environment)

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
