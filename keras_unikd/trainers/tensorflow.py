"""TensorFlow train and test steps of the Distiller (GradientTape)."""

import keras
import tensorflow as tf
from keras.utils import unpack_x_y_sample_weight


def _first_local_replica(strategy, value):
    if isinstance(value, tf.distribute.DistributedValues):
        return strategy.experimental_local_results(value)[0]
    return value


def _reducible_logs(logs):
    """Logs that Keras can average over the replicas of any strategy.

    With several workers, Keras averages each per-replica log over axis 0
    (keras-team/keras#20585), which a scalar lacks: give it one. This is
    Keras's own test for that code path.
    """
    strategy = tf.distribute.get_strategy()
    if not (
        isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
        and strategy.extended._in_multi_worker_mode()
    ):
        return logs
    return {name: tf.reshape(value, (1,)) for name, value in logs.items()}


class TensorFlowDistillerSteps:
    def train_step(self, data):
        x, y, sample_weight = unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            total, terms, student_logits = self.compute_distillation_losses(
                x, y, sample_weight, training=True
            )
            # tf.distribute sums gradients over replicas (Mirrored and
            # MultiWorkerMirrored strategies): each replica's batch mean
            # carries 1 / num_replicas of the weight, so the update is that
            # of the global batch's mean. The metrics get the unscaled total.
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            scaled_total = self.optimizer.scale_loss(total / replicas)
        variables = self.trainable_variables
        gradients = tape.gradient(scaled_total, variables)
        self.optimizer.apply(gradients, variables)
        return _reducible_logs(
            self.update_train_metrics(total, terms, y, student_logits, sample_weight)
        )

    def test_step(self, data):
        x, y, sample_weight = unpack_x_y_sample_weight(data)
        loss, student_logits = self.compute_student_loss(x, y, sample_weight)
        return _reducible_logs(
            self.update_test_metrics(loss, y, student_logits, sample_weight)
        )

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        """Keras's, reading the first batch from one local replica.

        Under a `tf.distribute` strategy Keras builds the metrics and the
        optimizer from the first batch, which it averages over replicas only
        to learn its shapes; that cross-replica reduce fails under
        `MultiWorkerMirroredStrategy` (keras-team/keras#20585). The first
        local replica's batch has the same shapes.
        """
        if self._distribute_strategy is None:
            return
        strategy = self.distribute_strategy
        if iterator is not None:
            for _, _, batches in iterator:
                data_batch = keras.tree.map_structure(
                    lambda value: _first_local_replica(strategy, value), next(batches)
                )
                break
        with strategy.scope():
            self._symbolic_build(data_batch=data_batch)
