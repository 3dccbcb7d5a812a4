"""Keras 3's ``keras.optimizers.Muon`` (keras/src/optimizers/muon.py, 3.15.1) with one planted
bug each, written as a user would patch it: a clamped epsilon (``max(||X||_F, 1e-7)`` where
the source adds it), Nesterov taken from the momentum buffer before it is updated, and Keller's
shape factor applied on top of the Moonlight ``lr_adjust`` (two scale rules multiplied).
Imported only where keras is (tests/test_keras_muon.py)."""
import keras
from keras import ops


class MuonClampEps(keras.optimizers.Muon):
    def zeropower_via_newtonschulz5(self, x, steps):
        a, b, c = self.muon_a, self.muon_b, self.muon_c
        tall = x.shape[-2] > x.shape[-1]
        if tall:
            x = self.transpose_last_axis(x)
        x = x / ops.maximum(ops.norm(x, axis=(-2, -1), keepdims=True), 1e-7)
        for _ in range(steps):
            A = x @ self.transpose_last_axis(x)
            x = a * x + (b * A + c * A @ A) @ x
        return self.transpose_last_axis(x) if tall else x


class MuonStaleNesterov(keras.optimizers.Muon):
    def _muon_update_step(self, gradient, variable, lr, m):
        g = ops.add(gradient, self.momentum * m) if self.nesterov else None
        self.assign_add(m, ops.add(gradient, m * (self.momentum - 1)))
        if not self.nesterov:
            g = m
        update = self.zeropower_via_newtonschulz5(g, self.ns_steps)
        self.assign_sub(variable, self.lr_adjust(lr * update))


class MuonDoubleScale(keras.optimizers.Muon):
    def lr_adjust(self, x):
        x = x * max(1.0, x.shape[0] / x.shape[1]) ** 0.5
        return super().lr_adjust(x)
