"""rankflow models: feature spec, Wide & Deep and DCN-V2 in PyTorch, training, checkpoints.

Modules, in the order data flows through them:

- ``config``: the declarative model config (``configs/model.yaml``), validated on load.
- ``hashing``: stable (cross-process, cross-machine) hashing of categorical values.
- ``encoding``: how each fitted feature encodes raw values (the one transform of training and
  serving: frames and a request's plain columns alike).
- ``spec``: ``FeatureSpec`` - fitted on the train split, turns raw feature rows into tensors.
- ``layers`` / ``networks``: small typed ``nn.Module`` s and the two models built from them.
- ``train`` / ``loop``: CPU training (``train_model`` prepares or resumes a run; the loop
  runs it: pre-built tensors, Adam, early stopping, checkpoints).
- ``checkpoint`` / ``warm_start``: safetensors + JSON checkpoints; warm start by name and shape.
- ``metrics`` / ``baseline``: AUC, logloss, NE, calibration, oracle gap; logistic regression.
- ``scoring``: ``Scorer`` - a checkpoint that scores raw feature rows.

Submodules are imported on use (``from models.train import train_model``) so that importing
the package does not pull in torch.
"""
