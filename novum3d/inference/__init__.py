"""Using a trained NOVUM model: load it, classify images, estimate their poses, report them.

- :func:`load_model` (:mod:`.loading`): a checkpoint back to a model and its config.
- :func:`predict` (:mod:`.pipeline`): class (``model.classify`` alone when the pose is not needed) and pose.
- :mod:`.pose`: the render-and-compare estimator; :mod:`.photos` and :mod:`.figures`: images in, records
  and pictures out.
"""

from .loading import load_model
from .pipeline import Prediction, estimate_poses, predict
from .pose import PoseConfig, PoseEstimator, PoseResult

__all__ = ["PoseConfig", "PoseEstimator", "PoseResult", "Prediction", "estimate_poses", "load_model", "predict"]
