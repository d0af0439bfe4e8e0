"""Build hook: compile the cffi binding of linux/kvm.h, then generate kvm/_header.py from it."""
import runpy
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext


class BuildExtAndHeader(build_ext):
    """build_ext, then the typed enums and the stub, written from the compiled module's values."""

    def run(self) -> None:
        super().run()
        builder = runpy.run_path(str(Path(__file__).resolve().parent / "kvm" / "_build.py"))
        builder["write_generated"](self.get_ext_fullpath("kvm._kvm_cffi"))


setup(cffi_modules=["kvm/_build.py:ffibuilder"], cmdclass={"build_ext": BuildExtAndHeader})
