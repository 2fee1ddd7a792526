"""Protect a whole classification dataset for release: :mod:`.craft` crafts uint8 tensors batch by
batch, :mod:`.folder` streams an image tree on disk chunk by chunk (resumable, torchrun-aware),
:mod:`.surrogate` loads the network the perturbations are crafted on."""
