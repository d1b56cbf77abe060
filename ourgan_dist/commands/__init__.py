"""The commands of ``ourgan-dist``, one module each; ``cli.py`` registers them on its group."""
