"""The confidence policy's thresholds, standard library only: the bundle's --help shows them before numpy is installed.

One definition of "uncertain" (runtime/decode.py ``verdict``) for `classify`, the camera overlay, the deploy
bundle, the serve page, `visualize` and the training report. An answer is "confident" when its probability is
at least DEFAULT_MIN_CONFIDENCE and its margin over the runner-up at least DEFAULT_MIN_MARGIN; below
AMBIGUOUS_MARGIN it is a near coin toss; between the two it is "unsure". Every answer not "confident" is
flagged ``uncertain``.
"""

from __future__ import annotations

DEFAULT_MIN_CONFIDENCE = 0.5  # top probability below which an answer is never "confident"
DEFAULT_MIN_MARGIN = 0.5  # margin to the runner-up from which an answer is "confident"
AMBIGUOUS_MARGIN = 0.15  # below this margin the answer is a near coin toss
VERDICTS = ("confident", "unsure", "ambiguous")
