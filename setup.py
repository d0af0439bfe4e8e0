"""Build hook: setuptools needs setup.py to compile the cffi binding of linux/kvm.h."""
from setuptools import setup

setup(cffi_modules=["kvm/_build.py:ffibuilder"])
