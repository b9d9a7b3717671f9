#!/usr/bin/env python3
"""Where a model's pose errors and class votes come from: ``pose-errors``, ``objective``, ``votes``.

    python scripts/diagnose.py pose-errors OUT/cache/ood-pose.jsonl --data D --split ood-pose
    python scripts/diagnose.py objective OUT/cache/occluded-L3.jsonl
    python scripts/diagnose.py votes --checkpoint runs/x/last.pt --data D --split occluded-L3

``python scripts/diagnose.py <tool> --help`` lists each tool's options (novum3d/evaluation/diagnosis/).
"""

import sys

from novum3d.evaluation.diagnosis.command import main

if __name__ == "__main__":
    sys.exit(main())
