"""Build the optional C accelerator; without a compiler the pure-Python walk is used instead."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("originshield._speedups", ["originshield/_speedups.c"], optional=True)])
