"""Reproduced experiments: one folder per experiment, one command each.

Run any of them with ``python -m experiments.<name>.run [--quick] [--out DIR] [--force]``; each folder's
README.md states what the seed reports, the command, what comes out, and what we observed. The shared
machinery (argument parsing, configs, output folders, atomic writes) is in :mod:`experiments._common`.
"""
