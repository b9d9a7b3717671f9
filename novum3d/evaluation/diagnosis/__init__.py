"""Diagnoses of a trained model, run as ``scripts/diagnose.py {pose-errors, objective, votes}``.

- :mod:`.pose_errors`: which angle is wrong, by where the true elevation lies against the training poses.
- :mod:`.objective`: when the search fails, does the objective prefer the wrong pose, or was the right one missed.
- :mod:`.votes`: who wins each feature cell's class vote under occlusion.
- :mod:`.records`: the evaluation caches they read; :mod:`.command`: the command line.
"""
