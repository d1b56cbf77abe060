"""Judging a model on its photo: fine-detail and layout figures (``evaluate``, ``novelty``) and
the contact sheets a person looks at (``sheet``)."""
