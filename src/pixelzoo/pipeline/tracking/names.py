"""Every MLflow tag and environment variable name the pipeline writes or reads, in one place.

The lower house (``pixelzoo.errors``' ``PIXELZOO_KILL_AT``, ``pixelzoo.nn.native``'s ``PIXELZOO_NATIVE``)
keeps its own two: it imports nothing of the pipeline.
"""

# ----------------------------------------------------------------------------- tags on every stage run
TAG_EXPERIMENT, TAG_STAGE = "pixelzoo.experiment", "pixelzoo.stage"
TAG_CONFIG = "pixelzoo.config_sha256"
TAG_FAILURE = "pixelzoo.failure"  # why a FAILED run failed (exception type and message)
TAG_CODE = "code.sha256"  # the stage's source files (pipeline.layout.stage_code), measured when it ran
TAG_CHECKPOINT = "checkpoint.sha256"  # train: of model.pt it wrote; evaluate/sample: of the bytes loaded
TAG_TRAIN_RUN = "train.run_id"  # evaluate/sample: the train run that wrote the checkpoint they loaded
TAG_HOST, TAG_PID, TAG_PID_START = "pixelzoo.host", "pixelzoo.pid", "pixelzoo.pid_start"
TAG_KILLED = "pixelzoo.killed_reason"  # set on a run found RUNNING after its process died
TAG_SUPERSEDED_BY, TAG_ORPHANS = "pixelzoo.superseded_by", "pixelzoo.orphans_marked_killed"
TAG_COMMIT, TAG_DIRTY = "git.commit", "git.dirty"
TAG_DATA = "dataset.sha256"  # of the processed dataset; TAG_DATA + ".<split>" per split
TAG_DVC_EXP = "dvc.exp_name"  # set when the run comes from `dvc exp run`

# ----------------------------------------------------------------------------- environment
# Set by pipeline.profiles.profile for runs in a profile copy: the commit of the user's checkout, not the
# copy's.
ENV_SOURCE_COMMIT, ENV_SOURCE_DIRTY = "PIXELZOO_SOURCE_COMMIT", "PIXELZOO_SOURCE_DIRTY"
ENV_SOCKET = "PIXELZOO_TRACKING_SOCKET"  # set for the stages of a profile run: its shared tracking process
ENV_LAUNCHED = "PIXELZOO_LAUNCHED"  # set in torchrun's workers, so they never launch again
ENV_ROOT = "PIXELZOO_ROOT"  # the checkout the regression check reads (default: this tree)
