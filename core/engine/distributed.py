"""Training on one machine or several: TensorFlow's distribution strategy (``TF_CONFIG``) and which worker writes."""

from __future__ import annotations

import json
import os
from typing import Any

from core.errors import DataFolderError

# ------------------------------------------------------------------------------------------- strategy ---

def choose_strategy() -> Any:
    """MultiWorkerMirroredStrategy when ``TF_CONFIG`` names a cluster, MirroredStrategy on several GPUs,
    else the default (single device) strategy."""
    import tensorflow as tf

    tf_config = os.environ.get("TF_CONFIG", "")
    if tf_config:
        try:
            cluster = json.loads(tf_config).get("cluster", {})
        except json.JSONDecodeError as err:
            raise DataFolderError(f"expected TF_CONFIG to be JSON, got {tf_config[:60]!r}") from err
        if sum(len(v) for v in cluster.values()) > 1:
            return tf.distribute.MultiWorkerMirroredStrategy()
    if len(tf.config.list_physical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def strategy_name(strategy: Any) -> str:
    """A readable name of a tf.distribute strategy (MultiWorkerMirroredStrategy's class is named
    CollectiveAllReduceStrategy)."""
    import tensorflow as tf

    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return "MultiWorkerMirroredStrategy"
    return type(strategy).__name__


_MULTI_WORKER_PATCHED = False


def enable_keras_multi_worker() -> None:
    """Work around two Keras 3 (3.15) bugs that stop ``model.fit`` under MultiWorkerMirroredStrategy
    (keras-team/keras#20585): the symbolic build reduces the first input batch with ``strategy.reduce`` (which
    fails on per-replica inputs), and metric logs are reduced along axis 0 although they are scalars. The
    build now uses this worker's own batch (only its shape and dtype matter) and logs are averaged over replicas.
    Applied once per process, only when a multi-worker strategy is in use.

    Raises:
        DataFolderError: this Keras version lacks the patched internals (multi-worker training unsupported).
    """
    global _MULTI_WORKER_PATCHED
    if _MULTI_WORKER_PATCHED:
        return
    import tensorflow as tf

    try:
        from keras.src import tree
        from keras.src.backend.tensorflow import trainer as tf_trainer

        orig_build = tf_trainer.TensorFlowTrainer._maybe_symbolic_build
        orig_reduce = tf_trainer.reduce_per_replica
        is_multi_worker = tf_trainer._collective_all_reduce_multi_worker
    except (ImportError, AttributeError) as err:
        raise DataFolderError(f"expected Keras 3.x internals for multi-worker training, got {err}") from err

    def local_value(strategy: Any, value: Any) -> Any:
        if isinstance(value, tf.distribute.DistributedValues):
            return strategy.experimental_local_results(value)[0]
        return value

    def maybe_symbolic_build(self: Any, iterator: Any = None, data_batch: Any = None) -> Any:
        if self._distribute_strategy is None or iterator is None or not is_multi_worker(self.distribute_strategy):
            return orig_build(self, iterator=iterator, data_batch=data_batch)
        for _, _, it in iterator:
            batch = next(it)
            break
        local = tree.map_structure(lambda v: local_value(self.distribute_strategy, v), batch)
        with self.distribute_strategy.scope():
            self._symbolic_build(data_batch=local)

    def reduce_per_replica(values: Any, strategy: Any, reduction: str) -> Any:
        if is_multi_worker(strategy) and reduction in ("auto", "mean"):
            return tree.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
        return orig_reduce(values, strategy, reduction)

    tf_trainer.TensorFlowTrainer._maybe_symbolic_build = maybe_symbolic_build
    tf_trainer.reduce_per_replica = reduce_per_replica
    _MULTI_WORKER_PATCHED = True


def is_chief() -> bool:
    """True unless ``TF_CONFIG`` names this process as a non-chief worker."""
    tf_config = os.environ.get("TF_CONFIG", "")
    if not tf_config:
        return True
    task = json.loads(tf_config).get("task", {})
    cluster = json.loads(tf_config).get("cluster", {})
    if "chief" in cluster:
        return task.get("type") == "chief"
    return task.get("type", "worker") == "worker" and int(task.get("index", 0)) == 0
