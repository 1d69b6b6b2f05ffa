"""Evaluation against public benchmarks and references.

``froc``: Camelyon16 lesion-detection FROC (official rules); ``auc``: slide- and patch-level ROC AUC
with bootstrap CIs, sensitivity/specificity; ``segmentation``: pixel Dice/IoU and node-instance
matching; ``agreement``: metastatic-node count and N-stage agreement (quadratic-weighted kappa).
Definitions: docs/evaluation.md.
"""
