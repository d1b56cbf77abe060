"""Judging a model on its photo: the figures (``evaluate``: SR hold-out, base samples, the
report; ``detail``: fine-detail statistics; ``novelty``: layout novelty) and what a person looks
at (``pictures``: render / photo / bicubic panels and 1:1 crops; ``sheet``: seed sheets)."""
