# Beam's --setup_file ships the project to remote workers as an sdist built from this file;
# all metadata lives in pyproject.toml.
from setuptools import setup

setup()
