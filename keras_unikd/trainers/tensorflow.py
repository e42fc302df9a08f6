"""TensorFlow train and test steps of the Distiller (GradientTape)."""

import tensorflow as tf
from keras.utils import unpack_x_y_sample_weight


class TensorFlowDistillerSteps:
    def train_step(self, data):
        x, y, sample_weight = unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            total, terms, student_logits = self.compute_distillation_losses(
                x, y, sample_weight, training=True
            )
            # Gradients are summed over replicas: each replica's hand-written
            # batch mean must carry 1 / num_replicas of the weight.
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            scaled_total = self.optimizer.scale_loss(total / replicas)
        variables = self.trainable_variables
        gradients = tape.gradient(scaled_total, variables)
        self.optimizer.apply(gradients, variables)
        return self.update_train_metrics(total, terms, y, student_logits, sample_weight)

    def test_step(self, data):
        x, y, sample_weight = unpack_x_y_sample_weight(data)
        loss, student_logits = self.compute_student_loss(x, y, sample_weight)
        return self.update_test_metrics(loss, y, student_logits, sample_weight)
